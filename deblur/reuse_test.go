package deblur

import (
	"context"
	"testing"
)

// A Pipeline is reused across frames. Two frames with the same pixel count
// but transposed sizes must each get tiles of their own shape; a buffer
// reused by length alone sent a [1 3 64 96] tensor labelled [1 3 96 64].
func TestPipelineReuseAcrossTransposedFrames(t *testing.T) {
	f := &fakeIdentityBackend{info: fakeInfo(8), record: true}
	p, err := NewPipeline(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range [][2]int{{64, 96}, {96, 64}, {64, 96}} {
		img := Image{W: size[0], H: size[1], Pix: make([]float32, 3*size[0]*size[1])}
		for i := range img.Pix {
			img.Pix[i] = float32(i%97) / 97
		}
		out, _, err := p.Run(context.Background(), img)
		if err != nil {
			t.Fatalf("%dx%d after another shape: %v", size[0], size[1], err)
		}
		last := f.blurs[len(f.blurs)-1]
		if last.Shape[2] != int64(size[1]) || last.Shape[3] != int64(size[0]) {
			t.Fatalf("%dx%d: tile tensor shape %v", size[0], size[1], last.Shape)
		}
		for i := range img.Pix {
			if d := out.Pix[i] - img.Pix[i]; d > 1e-6 || d < -1e-6 {
				t.Fatalf("%dx%d: identity output differs at %d", size[0], size[1], i)
			}
		}
	}
}
