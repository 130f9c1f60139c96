package deblur

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeOOMBackend is the identity, except that any call on a tile with an
// edge above maxEdge fails with ErrOutOfMemory, the way a GPU backend
// reports an allocation that does not fit. failAfter lets the first calls
// of a frame succeed, so the failure comes mid-frame.
type fakeOOMBackend struct {
	fakeIdentityBackend
	maxEdge   int
	failAfter int // successful Transform calls per attempt before failing
	shapes    [][2]int64
	ok        int
}

func (f *fakeOOMBackend) Name() string { return "fake-oom" }

func (f *fakeOOMBackend) Transform(ctx context.Context, blur, prior Tensor) (Tensor, error) {
	h, w := blur.Shape[2], blur.Shape[3]
	f.shapes = append(f.shapes, [2]int64{w, h})
	if int(max(w, h)) > f.maxEdge {
		if f.ok >= f.failAfter {
			f.ok = 0
			return Tensor{}, fmt.Errorf("fake: cudaMalloc of a %dx%d activation: %w", w, h, ErrOutOfMemory)
		}
		f.ok++
	}
	return f.fakeIdentityBackend.Transform(ctx, blur, prior)
}

func TestOOMRetryHalvesTilesDownToMinTile(t *testing.T) {
	img := randImage(300, 200, 5)
	fb := &fakeOOMBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, maxEdge: 100, failAfter: 1}
	out, st, err := Run(context.Background(), fb, img, Options{Tile: 256, Overlap: 16, MinTile: 64})
	if err != nil {
		t.Fatal(err)
	}
	// 256 fails (on the second tile), 128 fails, 64 fits.
	if st.OOMRetries != 2 || st.TileW != 64 || st.TileH != 64 {
		t.Errorf("retries %d, tile %dx%d; want 2 retries ending at 64x64", st.OOMRetries, st.TileW, st.TileH)
	}
	if d := maxAbsDiff(out.Pix, img.Pix); d > 1e-5 {
		t.Errorf("identity through the retried tiling differs by %g", d)
	}
	// Every tile of one attempt has one shape: the retry never mixes.
	last := fb.shapes[len(fb.shapes)-1]
	for _, s := range fb.shapes[len(fb.shapes)-st.Tiles:] {
		if s != last {
			t.Fatalf("mixed shapes in the last attempt: %v", fb.shapes)
		}
	}
}

func TestOOMRetryTriesMinTileThenFails(t *testing.T) {
	img := randImage(300, 200, 6)
	fb := &fakeOOMBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(16)}, maxEdge: 50}
	_, st, err := Run(context.Background(), fb, img, Options{Tile: 384, Overlap: 32, MinTile: 96})
	if !IsOutOfMemory(err) {
		t.Fatalf("want an out-of-memory error, got %v", err)
	}
	// 384 is bigger than the frame: first try is the whole padded frame
	// (304), then 144 (152 on the 16 grid is 144), then min_tile 96.
	if st.OOMRetries != 2 || !strings.Contains(err.Error(), "minimum tile 96") {
		t.Errorf("retries %d, err %v", st.OOMRetries, err)
	}
	var edges []int64
	for _, s := range fb.shapes {
		if len(edges) == 0 || max(s[0], s[1]) != edges[len(edges)-1] {
			edges = append(edges, max(s[0], s[1]))
		}
	}
	if fmt.Sprint(edges) != "[304 144 96]" {
		t.Errorf("edges tried %v, want [304 144 96]", edges)
	}

	// MinTile 0: no retry at all.
	fb = &fakeOOMBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, maxEdge: 50}
	_, st, err = Run(context.Background(), fb, img, Options{Tile: 128, Overlap: 16})
	if !IsOutOfMemory(err) || st.OOMRetries != 0 || len(fb.shapes) != 1 {
		t.Errorf("without MinTile: retries %d calls %d err %v", st.OOMRetries, len(fb.shapes), err)
	}
	// Other errors are not retried.
	ff := &fakeFailingBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, failTransformAt: 1}
	_, st, err = Run(context.Background(), ff, img, Options{Tile: 128, Overlap: 16, MinTile: 64})
	if !errors.Is(err, errFakeBackend) || st.OOMRetries != 0 || ff.transfs != 1 {
		t.Errorf("non-OOM error: retries %d calls %d err %v", st.OOMRetries, ff.transfs, err)
	}
}

// gateRecorder answers with a scripted edge per call and records the edge
// asked for.
type gateRecorder struct {
	asked   []int
	answer  func(call int) (int, error)
	sleep   time.Duration
	backend *fakeIdentityBackend
	before  []int // backend Transform calls made before each gate call
}

func (g *gateRecorder) gate(ctx context.Context, edge int) (int, error) {
	g.asked = append(g.asked, edge)
	if g.backend != nil {
		g.before = append(g.before, g.backend.transfs)
	}
	time.Sleep(g.sleep)
	if g.answer == nil {
		return edge, nil
	}
	return g.answer(len(g.asked))
}

func TestGateAskedBeforeEveryTile(t *testing.T) {
	fb := &fakeIdentityBackend{info: fakeInfo(8)}
	g := &gateRecorder{backend: fb, sleep: 2 * time.Millisecond}
	p, err := NewPipeline(fb, Options{Tile: 64, Overlap: 8, Gate: g.gate})
	if err != nil {
		t.Fatal(err)
	}
	img := randImage(150, 100, 1)
	_, st, err := p.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.asked) != st.Tiles || st.Tiles < 4 {
		t.Fatalf("gate asked %d times for %d tiles", len(g.asked), st.Tiles)
	}
	for i, e := range g.asked {
		if e != 64 {
			t.Errorf("call %d asked for edge %d, want the configured 64", i, e)
		}
		if g.before[i] != i {
			t.Errorf("call %d came after %d tiles, want %d: the gate must precede each tile", i, g.before[i], i)
		}
	}
	if st.Gated < time.Duration(st.Tiles)*2*time.Millisecond || st.Overhead() >= st.Total-st.Gated+time.Millisecond {
		t.Errorf("gated %v, overhead %v, total %v", st.Gated, st.Overhead(), st.Total)
	}

	// An untiled frame asks with its padded longer side.
	g.asked = nil
	p.SetOptions(Options{Tile: 0, Overlap: 8, Gate: g.gate})
	if _, _, err := p.Run(context.Background(), randImage(150, 100, 1)); err != nil || len(g.asked) != 1 || g.asked[0] != 152 {
		t.Errorf("untiled: asked %v, err %v", g.asked, err)
	}
}

// A smaller edge before the first tile plans the frame with it; a smaller
// edge mid-frame waits for the next frame (one shape per frame).
func TestGateShrinksFromTheNextPlanning(t *testing.T) {
	fb := &fakeIdentityBackend{info: fakeInfo(8), record: true}
	shrinkFrom := 0
	g := &gateRecorder{answer: func(call int) (int, error) {
		if shrinkFrom > 0 && call >= shrinkFrom {
			return 72, nil // not on the pad grid of a 16-multiple: rounded to 72 (pad 8)
		}
		return 128, nil
	}}
	p, _ := NewPipeline(fb, Options{Tile: 128, Overlap: 32, Gate: g.gate})
	img := randImage(300, 200, 2)

	shrinkFrom = 2 // mid-frame
	out, st, err := p.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if st.TileW != 128 {
		t.Errorf("mid-frame shrink applied to this frame: tile %d", st.TileW)
	}
	for _, b := range fb.blurs {
		if b.Shape[3] != 128 || b.Shape[2] != 128 {
			t.Fatalf("tile shape %v in a frame planned at 128", b.Shape)
		}
	}
	if d := maxAbsDiff(out.Pix, img.Pix); d > 1e-5 {
		t.Errorf("identity differs by %g", d)
	}

	fb.blurs = nil
	out, st, err = p.Run(context.Background(), img) // the first answer is now 72
	if err != nil {
		t.Fatal(err)
	}
	if st.TileW != 72 || st.TileH != 72 {
		t.Errorf("next frame tile %dx%d, want 72x72", st.TileW, st.TileH)
	}
	if d := maxAbsDiff(out.Pix, img.Pix); d > 1e-5 {
		t.Errorf("identity through shrunk tiles differs by %g", d)
	}
	// The options themselves are unchanged: the shrink is per frame.
	if p.Options().Tile != 128 {
		t.Errorf("options changed to %+v", p.Options())
	}
}

func TestGateErrorEndsRun(t *testing.T) {
	fb := &fakeIdentityBackend{info: fakeInfo(8)}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateRecorder{answer: func(call int) (int, error) {
		if call == 3 {
			cancel() // shutdown while waiting for the GPU
			return 0, ctx.Err()
		}
		return 64, nil
	}}
	_, st, err := Run(ctx, fb, randImage(200, 200, 3), Options{Tile: 64, Overlap: 8, Gate: g.gate})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for the device") {
		t.Fatalf("got %v", err)
	}
	if fb.transfs != 2 || st.Tiles != 2 {
		t.Errorf("backend ran %d tiles after the gate said stop (stats %d), want 2", fb.transfs, st.Tiles)
	}
}
