package deblur

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

func TestPlanAxisProperties(t *testing.T) {
	for _, m := range []int{1, 8, 16} {
		for _, size := range []int{m, 5 * m, 80 * m, 161 * m} {
			for _, tile := range []int{m, 4 * m, 16 * m} {
				for _, ov := range []int{0, 1, m / 2, tile / 4, tile - m} {
					if ov < 0 || ov > tile-m {
						continue
					}
					t.Run(fmt.Sprintf("m=%d,size=%d,tile=%d,ov=%d", m, size, tile, ov), func(t *testing.T) {
						a := planAxis(size, tile, ov, m)
						if size <= tile {
							if a.tile != size || len(a.starts) != 1 {
								t.Fatalf("small axis not a single full tile: %+v", a.starts)
							}
							return
						}
						if a.tile != tile || a.starts[0] != 0 || a.starts[len(a.starts)-1] != size-tile {
							t.Fatalf("starts %v", a.starts)
						}
						sum := make([]float64, size)
						for i, s := range a.starts {
							if s%m != 0 {
								t.Fatalf("start %d not on the pad grid", s)
							}
							if i > 0 {
								if gap := s - a.starts[i-1]; gap <= 0 || tile-gap < ov {
									t.Fatalf("gap %d gives overlap below %d (starts %v)", gap, ov, a.starts)
								}
							}
							for k, w := range a.norm[i] {
								if !(w > 0) {
									t.Fatalf("tile %d pixel %d has weight %v", i, k, w)
								}
								sum[s+k] += float64(w)
							}
						}
						for c, s := range sum {
							if math.Abs(s-1) > 1e-6 {
								t.Fatalf("weights at %d sum to %v", c, s)
							}
						}
					})
				}
			}
		}
	}
}

// An identity transformer through pad, tile, blend and crop must give the
// input back, for frames smaller than a tile, exact multiples and odd sizes.
func TestIdentityReproducesInput(t *testing.T) {
	sizes := [][2]int{{1, 1}, {17, 9}, {100, 60}, {128, 128}, {256, 128}, {300, 1}, {1283, 719}}
	cfgs := []struct{ pad, tile, ov int }{
		{8, 0, 0}, {8, 64, 0}, {8, 64, 8}, {8, 64, 56}, {16, 128, 32}, {16, 128, 16}, {8, 256, 64},
	}
	for _, sz := range sizes {
		img := randImage(sz[0], sz[1], uint64(sz[0]*7+sz[1]))
		orig := append([]float32(nil), img.Pix...)
		for _, c := range cfgs {
			if sz[0] == 1283 && c.tile == 64 && c.ov == 56 {
				continue // ~2000 tiles: slow and adds nothing
			}
			t.Run(fmt.Sprintf("%dx%d/pad%d,tile%d,ov%d", sz[0], sz[1], c.pad, c.tile, c.ov), func(t *testing.T) {
				fb := &fakeIdentityBackend{info: fakeInfo(c.pad)}
				out, st, err := Run(context.Background(), fb, img, Options{Tile: c.tile, Overlap: c.ov, Seed: 1})
				if err != nil {
					t.Fatal(err)
				}
				if out.W != img.W || out.H != img.H {
					t.Fatalf("output %dx%d", out.W, out.H)
				}
				if d := maxAbsDiff(out.Pix, img.Pix); d > 1e-6 {
					t.Fatalf("identity changed the image by %g (%d tiles)", d, st.Tiles)
				}
				if maxAbsDiff(img.Pix, orig) != 0 {
					t.Fatal("Run modified its input")
				}
			})
		}
	}
}

// Tile inputs are windows of the reflect-padded frame, all the same shape.
func TestTilesArePaddedWindowsOfConstantShape(t *testing.T) {
	cases := []struct {
		w, h, pad, tile, ov int
		tw, th, tiles       int
	}{
		{1283, 719, 8, 256, 32, 256, 256, 6 * 4}, // padded 1288x720
		{1000, 100, 16, 256, 32, 256, 112, 5},    // short axis: tile = padded height
		{100, 60, 16, 256, 32, 112, 64, 1},       // smaller than a tile
		{512, 512, 16, 256, 0, 256, 256, 4},      // exact multiple, no overlap
		{300, 200, 8, 0, 0, 304, 200, 1},         // untiled
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%dx%d,pad%d,tile%d,ov%d", c.w, c.h, c.pad, c.tile, c.ov), func(t *testing.T) {
			img := randImage(c.w, c.h, 3)
			fb := &fakeIdentityBackend{info: fakeInfo(c.pad), record: true}
			_, st, err := Run(context.Background(), fb, img, Options{Tile: c.tile, Overlap: c.ov})
			if err != nil {
				t.Fatal(err)
			}
			if st.Tiles != c.tiles || fb.priors != c.tiles || fb.transfs != c.tiles || st.TileW != c.tw || st.TileH != c.th {
				t.Fatalf("stats %+v, calls %d/%d", st, fb.priors, fb.transfs)
			}
			pw, ph := PaddedSize(c.w, c.h, c.pad)
			if st.PaddedW != pw || st.PaddedH != ph {
				t.Fatalf("padded %dx%d", st.PaddedW, st.PaddedH)
			}
			padded, err := PadReflect(img, pw, ph)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := NewPipeline(fb, Options{Tile: c.tile, Overlap: c.ov})
			p.planTiles(c.w, c.h, c.tile, c.ov)
			for k, b := range fb.blurs {
				if !slices.Equal(b.Shape, []int64{1, 3, int64(c.th), int64(c.tw)}) {
					t.Fatalf("tile %d shape %v", k, b.Shape)
				}
				x0 := p.px.starts[k%len(p.px.starts)]
				y0 := p.py.starts[k/len(p.px.starts)]
				for ch := 0; ch < 3; ch++ {
					for y := 0; y < c.th; y++ {
						for x := 0; x < c.tw; x++ {
							got := b.Data[(ch*c.th+y)*c.tw+x]
							want := padded.Pix[ch*pw*ph+(y0+y)*pw+x0+x]
							if got != want {
								t.Fatalf("tile %d (%d,%d) ch %d: %v, want %v", k, x, y, ch, got, want)
							}
						}
					}
				}
			}
		})
	}
}

func TestSameNoiseEveryTileAndDeterminism(t *testing.T) {
	img := randImage(300, 200, 5)
	fb := &fakeIdentityBackend{info: fakeInfo(8), record: true}
	if _, _, err := Run(context.Background(), fb, img, Options{Tile: 64, Overlap: 16, Seed: 42}); err != nil {
		t.Fatal(err)
	}
	want := StartingNoise(42, 16*256)
	for k, n := range fb.noises {
		if maxAbsDiff(n, want) != 0 {
			t.Fatalf("tile %d got different noise", k)
		}
	}

	nb := &fakeNoiseMixBackend{info: fakeInfo(8)}
	p, err := NewPipeline(nb, Options{Tile: 64, Overlap: 16, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := p.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := p.Run(context.Background(), img) // reused buffers
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := Run(context.Background(), nb, img, Options{Tile: 64, Overlap: 16, Seed: 42}) // fresh pipeline
	if err != nil {
		t.Fatal(err)
	}
	if maxAbsDiff(a.Pix, b.Pix) != 0 || maxAbsDiff(a.Pix, c.Pix) != 0 {
		t.Fatal("same input and seed gave different outputs")
	}
	if err := p.SetOptions(Options{Tile: 64, Overlap: 16, Seed: 43}); err != nil {
		t.Fatal(err)
	}
	d, _, err := p.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if maxAbsDiff(a.Pix, d.Pix) < 1e-4 {
		t.Fatal("a different seed gave the same output")
	}
}

func TestCancellation(t *testing.T) {
	img := randImage(300, 200, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fb := &fakeFailingBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, cancel: cancel, cancelAt: 2}
	_, st, err := Run(ctx, fb, img, Options{Tile: 64, Overlap: 16})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if fb.transfs != 2 || st.Tiles != 2 {
		t.Fatalf("ran %d transforms (%d tiles) after cancelling at 2", fb.transfs, st.Tiles)
	}
	if !strings.Contains(err.Error(), "tile 3/") {
		t.Fatalf("error does not say where it stopped: %v", err)
	}

	fb2 := &fakeIdentityBackend{info: fakeInfo(8)}
	_, _, err = Run(ctx, fb2, img, Options{Tile: 64, Overlap: 16})
	if !errors.Is(err, context.Canceled) || fb2.priors != 0 {
		t.Fatalf("pre-cancelled context: err %v, %d calls", err, fb2.priors)
	}
}

func TestBackendErrors(t *testing.T) {
	img := randImage(300, 200, 1)
	opts := Options{Tile: 64, Overlap: 16}
	cases := []struct {
		name  string
		fb    *fakeFailingBackend
		wants []string
		is    error
	}{
		{"prior", &fakeFailingBackend{failPriorAt: 3}, []string{"fake-identity", "tile 3/", "prior"}, errFakeBackend},
		{"transform", &fakeFailingBackend{failTransformAt: 5}, []string{"tile 5/", "transform"}, errFakeBackend},
		{"shape", &fakeFailingBackend{failTransformAt: 1, badShape: true}, []string{"tile 1/", "shape"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fb.info = fakeInfo(8)
			_, _, err := Run(context.Background(), c.fb, img, opts)
			if err == nil {
				t.Fatal("no error")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("%v does not wrap the backend error", err)
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("%q lacks %q", err, w)
				}
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	fb := &fakeIdentityBackend{info: fakeInfo(16)}
	for _, o := range []Options{{Tile: -16}, {Tile: 100}, {Tile: 64, Overlap: 49}, {Tile: 64, Overlap: -1}} {
		t.Run(fmt.Sprintf("tile%d,ov%d", o.Tile, o.Overlap), func(t *testing.T) {
			if _, err := NewPipeline(fb, o); err == nil {
				t.Errorf("options %+v accepted", o)
			}
		})
	}
	if _, err := NewPipeline(fb, Options{Tile: 64, Overlap: 48}); err != nil {
		t.Error(err)
	}
	if _, err := NewPipeline(&fakeIdentityBackend{info: ModelInfo{PadMultiple: 8}}, Options{}); err == nil {
		t.Error("a backend without prior shape was accepted")
	}
	if _, _, err := Run(context.Background(), fb, Image{W: 3, H: 3, Pix: make([]float32, 5)}, Options{}); err == nil {
		t.Error("a malformed image was accepted")
	}
}

func TestClampAndNonFinite(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	fb := &fakeConstBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, vals: []float32{-0.5, 1.5, 0.25, nan, inf, -inf, 1, 0}}
	out, st, err := Run(context.Background(), fb, randImage(16, 8, 1), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 1, 0.25, 0, 1, 0, 1, 0}
	for i, v := range out.Pix {
		if v != want[i%8] {
			t.Fatalf("pixel %d = %v, want %v", i, v, want[i%8])
		}
	}
	if st.NonFinite != 3*16*8*3/8 {
		t.Fatalf("NonFinite = %d", st.NonFinite)
	}

	// Tiled, the clamp is fused into the blend of the last tile to touch a
	// pixel: every pixel must still end in [0,1], overlaps included.
	fb.vals = []float32{-0.5, 1.5, 0.25, 3, -2, 0.75, 1, 0, 2}
	out, st, err = Run(context.Background(), fb, randImage(301, 203, 1), Options{Tile: 64, Overlap: 24})
	if err != nil {
		t.Fatal(err)
	}
	if st.NonFinite != 0 || st.Tiles < 20 {
		t.Fatalf("stats %+v", st)
	}
	clamped := 0
	for i, v := range out.Pix {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("pixel %d = %v not clamped", i, v)
		}
		if v == 0 || v == 1 {
			clamped++
		}
	}
	if clamped == 0 {
		t.Fatal("nothing needed clamping: the test is not testing")
	}
}

// A local transformer (3x3 box blur) gives the same result tiled and
// untiled, except within one pixel of a tile edge that is not a frame edge,
// where the tile lacked the neighbour the untiled run had.
func TestTiledMatchesUntiledAwayFromBorders(t *testing.T) {
	const w, h, pad = 301, 203, 8
	img := randImage(w, h, 9)
	fb := &fakeBoxBlurBackend{info: fakeInfo(pad)}
	ref, _, err := Run(context.Background(), fb, img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{{Tile: 64, Overlap: 16}, {Tile: 96, Overlap: 8}, {Tile: 64, Overlap: 0}} {
		t.Run(fmt.Sprintf("tile%d,ov%d", o.Tile, o.Overlap), func(t *testing.T) {
			p, err := NewPipeline(fb, o)
			if err != nil {
				t.Fatal(err)
			}
			got, st, err := p.Run(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			near := func(a axisPlan, c int) bool {
				for _, s := range a.starts {
					if c < s || c >= s+a.tile {
						continue
					}
					if (s > 0 && c-s < 1) || (s+a.tile < a.size && s+a.tile-1-c < 1) {
						return true
					}
				}
				return false
			}
			compared, overlapped := 0, 0
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					if near(p.px, x) || near(p.py, y) {
						continue
					}
					compared++
					if covering(p.px, x)*covering(p.py, y) > 1 {
						overlapped++
					}
					for c := 0; c < 3; c++ {
						i := c*w*h + y*w + x
						if d := math.Abs(float64(got.Pix[i] - ref.Pix[i])); d > 1e-6 {
							t.Fatalf("(%d,%d) ch %d differs by %g", x, y, c, d)
						}
					}
				}
			}
			if compared < w*h*8/10 || (o.Overlap > 0 && overlapped == 0) {
				t.Fatalf("compared %d of %d pixels (%d in overlaps), %d tiles", compared, w*h, overlapped, st.Tiles)
			}
		})
	}
}

func covering(a axisPlan, c int) int {
	n := 0
	for _, s := range a.starts {
		if c >= s && c < s+a.tile {
			n++
		}
	}
	return n
}

// The clamp happens after all tiles covering a pixel are blended (it is
// fused into the last one's blend): compare with blending by hand from the
// plan's weights and clamping at the end.
func TestClampAfterBlending(t *testing.T) {
	const w, h = 301, 203
	fb := &fakePerTileConstBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, vals: []float32{2.5, -1.5, 0.6, 1.3, -0.2}}
	p, err := NewPipeline(fb, Options{Tile: 64, Overlap: 32})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := p.Run(context.Background(), randImage(w, h, 2))
	if err != nil {
		t.Fatal(err)
	}
	nx := len(p.px.starts)
	inRange := 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var sum float64
			for j, sy := range p.py.starts {
				for i, sx := range p.px.starts {
					if x >= sx && x < sx+p.px.tile && y >= sy && y < sy+p.py.tile {
						v := float64(fb.vals[(j*nx+i)%len(fb.vals)])
						sum += float64(p.px.norm[i][x-sx]) * float64(p.py.norm[j][y-sy]) * v
					}
				}
			}
			want := math.Min(math.Max(sum, 0), 1)
			if want > 0 && want < 1 {
				inRange++
			}
			for c := 0; c < 3; c++ {
				if got := float64(out.Pix[c*w*h+y*w+x]); math.Abs(got-want) > 1e-5 {
					t.Fatalf("(%d,%d): %v, want %v", x, y, got, want)
				}
			}
		}
	}
	if inRange < 1000 {
		t.Fatalf("only %d blended pixels inside (0,1): the test is not testing", inRange)
	}
}
