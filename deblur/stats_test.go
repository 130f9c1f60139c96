package deblur

import (
	"context"
	"testing"
)

// TestStatsSayHowTheFrameWasRun: the seed, tile shape and overlap in Stats
// are the ones the run used (the outputs' provenance comes from them).
func TestStatsSayHowTheFrameWasRun(t *testing.T) {
	p, err := NewPipeline(&fakeIdentityBackend{info: fakeInfo(16)}, Options{Tile: 64, Overlap: 16, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	img := Image{W: 100, H: 50, Pix: make([]float32, 3*100*50)}
	_, st, err := p.Run(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Seed != 42 || st.Overlap != 16 || st.TileW != 64 || st.TileH != 64 {
		t.Errorf("tiled: seed %d overlap %d tile %dx%d", st.Seed, st.Overlap, st.TileW, st.TileH)
	}
	p.SetOptions(Options{Tile: 0, Overlap: 16, Seed: 3})
	if _, st, err = p.Run(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	if st.Seed != 3 || st.Overlap != 0 || st.TileW != 112 || st.TileH != 64 {
		t.Errorf("whole frame: seed %d overlap %d tile %dx%d", st.Seed, st.Overlap, st.TileW, st.TileH)
	}
}
