package deblur

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkOverhead720p measures everything Run does outside the network:
// tile extraction with reflect padding, blending, crop and clamp, at
// 1280x720, with the identity fake (whose "network" costs nothing). The
// pipeline is reused, as in the daemon. Compare with the network time per
// frame (seconds on CPU, tens to hundreds of ms on a GPU).
func BenchmarkOverhead720p(b *testing.B) {
	img := randImage(1280, 720, 1)
	for _, o := range []Options{{}, {Tile: 256, Overlap: 32}, {Tile: 512, Overlap: 64}, {Tile: 128, Overlap: 32}} {
		b.Run(fmt.Sprintf("tile%d_overlap%d", o.Tile, o.Overlap), func(b *testing.B) {
			p, err := NewPipeline(&fakeIdentityBackend{info: fakeInfo(16)}, o)
			if err != nil {
				b.Fatal(err)
			}
			var st Stats
			for b.Loop() {
				if _, st, err = p.Run(context.Background(), img); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(st.Tiles), "tiles")
		})
	}
}
