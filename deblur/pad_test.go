package deblur

import (
	"fmt"
	"testing"
)

func TestReflectIndexHandValues(t *testing.T) {
	cases := []struct {
		n    int
		want []int
	}{
		// PyTorch F.pad(x, (0, k), mode="reflect") on [a b c d] gives
		// [a b c d c b a] for k = 3; beyond that we keep mirroring.
		{4, []int{0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0}},
		{2, []int{0, 1, 0, 1, 0, 1}},
		{1, []int{0, 0, 0, 0}},
		{3, []int{0, 1, 2, 1, 0, 1, 2}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("n=%d", c.n), func(t *testing.T) {
			for i, w := range c.want {
				if got := reflectIndex(i, c.n); got != w {
					t.Errorf("reflectIndex(%d, %d) = %d, want %d", i, c.n, got, w)
				}
			}
		})
	}
}

func TestPadReflectHand(t *testing.T) {
	// One 3x2 image, channels offset by 10 and 20.
	img := Image{W: 3, H: 2, Pix: []float32{
		1, 2, 3,
		4, 5, 6,
		11, 12, 13,
		14, 15, 16,
		21, 22, 23,
		24, 25, 26,
	}}
	got, err := PadReflect(img, 5, 4)
	if err != nil {
		t.Fatal(err)
	}
	// Right: columns 3,4 mirror columns 1,0. Bottom: rows 2,3 mirror rows
	// 0,1 (row 2 = row 0 because the edge row 1 is not repeated; row 3
	// reflects again to row 1 as the pad equals the height).
	want := []float32{
		1, 2, 3, 2, 1,
		4, 5, 6, 5, 4,
		1, 2, 3, 2, 1,
		4, 5, 6, 5, 4,
	}
	for c := 0; c < 3; c++ {
		for i, w := range want {
			if g := got.Pix[c*20+i]; g != w+float32(10*c) {
				t.Fatalf("channel %d index %d: got %v, want %v", c, i, g, w+float32(10*c))
			}
		}
	}

	// 4x3 padded to 8x8 (pads larger than the image: repeated reflection).
	img2 := Image{W: 4, H: 3, Pix: make([]float32, 36)}
	for i := range img2.Pix {
		img2.Pix[i] = float32(i)
	}
	got2, err := PadReflect(img2, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	rowMap := []int{0, 1, 2, 1, 0, 1, 2, 1}
	colMap := []int{0, 1, 2, 3, 2, 1, 0, 1}
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			if g, w := got2.Pix[y*8+x], float32(rowMap[y]*4+colMap[x]); g != w {
				t.Fatalf("(%d,%d): got %v want %v", x, y, g, w)
			}
		}
	}

	if _, err := PadReflect(img, 2, 2); err == nil {
		t.Fatal("padding to a smaller size must fail")
	}
}

func TestPaddedSize(t *testing.T) {
	for _, c := range []struct{ w, h, m, wantW, wantH int }{
		{1283, 719, 8, 1288, 720}, {1280, 720, 16, 1280, 720}, {1, 1, 16, 16, 16}, {5, 7, 0, 5, 7},
	} {
		t.Run(fmt.Sprintf("%dx%d,multiple%d", c.w, c.h, c.m), func(t *testing.T) {
			if w, h := PaddedSize(c.w, c.h, c.m); w != c.wantW || h != c.wantH {
				t.Errorf("PaddedSize(%d,%d,%d) = %d,%d, want %d,%d", c.w, c.h, c.m, w, h, c.wantW, c.wantH)
			}
		})
	}
}
