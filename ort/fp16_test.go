package ort

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	onnx "github.com/yalue/onnxruntime_go"

	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/model"
	"hidiffd/quality"
)

// TestFP16Numerics checks, without a GPU, what FP16 TensorRT engines will
// compute: the float16 transformer graph (transformer.fp16.onnx, which
// strongly typed engines run as written) against the float32 graph, on
// real photographs, for the shipped model (models/default) and for the
// random-weight gopro preset, the largest network and the largest
// activations we have.
//
// ONNX Runtime's CPU provider does not compute in float16: it has float16
// kernels for data movement (Reshape, Transpose, Slice, ...) only, and runs
// every convolution, matrix product and elementwise op of the float16 graph
// in float32 through casts it inserts (InsertedPrecisionFreeCast_* nodes in
// its optimised graph), then drops the cast pairs between neighbours, so a
// chain of ops runs in float32 from end to end. Its output says the graph is
// valid and close, but hides overflow. So the limits are asserted on the
// float16 rounding simulation (transformer.fp16sim.onnx, written by
// `python3 -m engine_build.precision simulate`): float32 arithmetic inside
// each op, every float16 tensor rounded to float16 between ops, so a value
// past 65504 becomes inf where TensorRT's would. It runs at ONNX Runtime's
// extended optimisation level, which keeps the rounding casts (its output
// is bit-identical to running with no optimisation; level "all" fuses some
// convolutions across them). The float16 graph itself runs too, with the
// same limits.
//
// What neither checks: float16 accumulation inside one op. TensorRT's
// FP16 convolutions and matrix products read and write float16; the sums
// inside them are not simulated (float32 here). The sums that could
// overflow, over every pixel of a tile, are the FP32 islands.
//
// Limits, per tile, against the float32 graph's output (both clamped to
// [0, 1] as the pipeline writes them): no NaN or Inf anywhere, PSNR at least
// fp16MinPSNR, largest difference at most fp16MaxAbs. 50 dB is an RMS error
// of 0.8 levels of 8 bits, below the 8-bit rounding of the output itself
// (58.9 dB is that rounding alone), and 25 dB above what the model's own
// errors cost (24 dB against ground truth); a broken island or a layer out
// of float16's range costs far more. Measured: 72 to 84 dB (see the log).
const (
	fp16MinPSNR = 50.0
	fp16MaxAbs  = 8.0 / 255
)

// fp16Photos are the photographs: an outdoor scene (BSDS500 validation), a
// city (Urban100: long edges, fine texture), a dark cockpit with bright
// windows (SUN). Each is blurred by a 9-pixel linear motion in its own
// direction, which is what the network expects to see.
var fp16Photos = []string{
	"bsds500/val/148089.jpg",
	"urban100/img_009.jpg",
	"sun80/cockpit_sun_czprfwxqccwwxhmb.jpg",
}

type fp16Case struct {
	name     string
	model    string // folder with prior.onnx, transformer.onnx, transformer.fp16.onnx
	sim      string // transformer.fp16sim.onnx
	tile     int    // edge of the square tiles
	perPhoto int    // tiles per photograph (along the diagonal)
	mixed    int    // tiles the float16 graph itself runs on (the simulation runs on all)
}

// fp16Cases: the shipped model at 256-pixel tiles, gopro at 128 (it costs
// 20 times more per pixel). CPU time: about a minute on two shared cores.
func fp16Cases(t *testing.T) []fp16Case {
	root := modelsRoot(t)
	repo := repoRoot()
	return []fp16Case{
		{name: "default", model: filepath.Join(repo, "models", "default"),
			sim: filepath.Join(root, "fp16sim", "default", "transformer.fp16sim.onnx"), tile: 256, perPhoto: 2, mixed: 6},
		{name: "gopro", model: filepath.Join(root, "gopro"),
			sim: filepath.Join(root, "fp16sim", "gopro", "transformer.fp16sim.onnx"), tile: 128, perPhoto: 1, mixed: 1},
	}
}

// photosDir is $HIDIFFD_PHOTOS, else shared/data/photos beside the
// checkout (../shared/data/photos from its root).
func photosDir(t *testing.T) string {
	if d := os.Getenv("HIDIFFD_PHOTOS"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "..", "shared", "data", "photos")
}

// fp16Tile is one network input cut from a photograph.
type fp16Tile struct {
	name  string
	blur  deblur.Tensor
	prior deblur.Tensor
}

// tileStats compares one output with the float32 graph's.
type tileStats struct {
	psnr      float64
	maxAbs    float64
	nonFinite int
}

func compareTile(got, ref []float32) tileStats {
	var s tileStats
	a, b := make([]float32, len(got)), make([]float32, len(ref))
	for i, v := range got {
		f, r := float64(v), float64(ref[i])
		if math.IsNaN(f) || math.IsInf(f, 0) {
			s.nonFinite++
			a[i] = float32(math.NaN())
			continue
		}
		s.maxAbs = math.Max(s.maxAbs, math.Abs(min(max(f, 0), 1)-min(max(r, 0), 1)))
		a[i], b[i] = float32(min(max(f, 0), 1)), float32(min(max(r, 0), 1))
	}
	if s.nonFinite > 0 {
		s.psnr = math.Inf(-1)
		return s
	}
	s.psnr, _ = quality.PSNR(a, b)
	return s
}

// fp16Session opens one graph with the daemon's settings at an
// optimisation level; optimized, if set, receives ONNX Runtime's optimised
// graph.
func fp16Session(t *testing.T, path string, inputs []string, output string, level onnx.GraphOptimizationLevel, optimized string) *onnx.DynamicAdvancedSession {
	t.Helper()
	so, err := sessionOptions(runtime.GOMAXPROCS(0), true)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	if err := so.SetGraphOptimizationLevel(level); err != nil {
		t.Fatal(err)
	}
	if optimized != "" {
		if err := so.SetOptimizedModelFilePath(optimized); err != nil {
			t.Fatal(err)
		}
	}
	s, err := onnx.NewDynamicAdvancedSession(path, inputs, []string{output}, so)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

func fp16Run(t *testing.T, s *onnx.DynamicAdvancedSession, x0, x1, out deblur.Tensor) {
	t.Helper()
	var vals []onnx.Value
	for _, x := range []deblur.Tensor{x0, x1, out} {
		v, err := onnx.NewTensor(onnx.NewShape(x.Shape...), x.Data)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Destroy()
		vals = append(vals, v)
	}
	if err := s.Run(vals[:2], vals[2:]); err != nil {
		t.Fatal(err)
	}
}

// motionBlur averages 9 pixels along direction (dx, dy), edges clamped.
func motionBlur(img *imageio.Image, dx, dy int) *imageio.Image {
	out := imageio.NewImage(img.W, img.H, img.Format, img.BitDepth)
	const taps = 9
	for c := 0; c < 3; c++ {
		src, dst := img.Pix[c*img.W*img.H:], out.Pix[c*img.W*img.H:]
		for y := 0; y < img.H; y++ {
			for x := 0; x < img.W; x++ {
				var sum float32
				for k := -taps / 2; k <= taps/2; k++ {
					xx, yy := min(max(x+k*dx, 0), img.W-1), min(max(y+k*dy, 0), img.H-1)
					sum += src[yy*img.W+xx]
				}
				dst[y*img.W+x] = sum / taps
			}
		}
	}
	return out
}

// fp16Tiles cuts the tiles of one case from the photographs and runs the
// float32 prior on each (every engine runs the prior in FP32).
func fp16Tiles(t *testing.T, c fp16Case, photos string, prior *onnx.DynamicAdvancedSession) []fp16Tile {
	t.Helper()
	dirs := [][2]int{{1, 0}, {1, 1}, {0, 1}}
	var tiles []fp16Tile
	for i, rel := range fp16Photos {
		img, err := imageio.DecodeFile(filepath.Join(photos, rel), imageio.Limits{})
		if err != nil {
			t.Fatalf("photograph %s: %v (set $HIDIFFD_PHOTOS to the photos folder)", rel, err)
		}
		img = motionBlur(img, dirs[i%3][0], dirs[i%3][1])
		T := c.tile
		if img.W < T || img.H < T {
			t.Fatalf("%s is %dx%d, smaller than a %d tile", rel, img.W, img.H, T)
		}
		for k := 0; k < c.perPhoto; k++ {
			// spread along the diagonal, in multiples of 8
			x0 := (img.W - T) * (k + 1) / (c.perPhoto + 1) / 8 * 8
			y0 := (img.H - T) * (k + 1) / (c.perPhoto + 1) / 8 * 8
			blur := deblur.NewTensor(1, 3, int64(T), int64(T))
			for ch := 0; ch < 3; ch++ {
				for y := 0; y < T; y++ {
					copy(blur.Data[(ch*T+y)*T:(ch*T+y+1)*T], img.Pix[(ch*img.H+y0+y)*img.W+x0:])
				}
			}
			noise := deblur.NewTensor(1, 16, 256)
			copy(noise.Data, deblur.StartingNoise(uint64(i+1), len(noise.Data)))
			pr := deblur.NewTensor(1, 16, 256)
			fp16Run(t, prior, blur, noise, pr)
			tiles = append(tiles, fp16Tile{name: fmt.Sprintf("%s@%d,%d", rel, x0, y0), blur: blur, prior: pr})
		}
	}
	return tiles
}

func TestFP16Numerics(t *testing.T) {
	cases := fp16Cases(t)
	photos := photosDir(t)
	if _, err := os.Stat(filepath.Join(photos, fp16Photos[0])); err != nil {
		t.Fatalf("no photographs (%v): they are in shared/data/photos beside the checkout, or set $HIDIFFD_PHOTOS", err)
	}
	lib, err := DefaultLibraryPath()
	if err != nil {
		t.Skipf("no ONNX Runtime: %v", err)
	}
	if _, _, err := ensureEnv(lib); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range []string{filepath.Join(c.model, model.MixedFile), c.sim} {
				if _, err := os.Stat(p); err != nil {
					t.Skipf("%v: run `make models`", err)
				}
			}
			testFP16(t, c, photos)
		})
	}
}

func testFP16(t *testing.T, c fp16Case, photos string) {
	t0 := time.Now()
	prior := fp16Session(t, filepath.Join(c.model, model.PriorFile), model.PriorIO.Inputs[:], model.PriorIO.Output, onnx.GraphOptimizationLevelEnableAll, "")
	tiles := fp16Tiles(t, c, photos, prior)
	prior.Destroy()

	in, out := model.TransformerIO.Inputs[:], model.TransformerIO.Output
	refs := make([]deblur.Tensor, len(tiles))
	s := fp16Session(t, filepath.Join(c.model, model.TransformerFile), in, out, onnx.GraphOptimizationLevelEnableAll, "")
	for i, tl := range tiles {
		refs[i] = deblur.NewTensor(tl.blur.Shape...)
		fp16Run(t, s, tl.blur, tl.prior, refs[i])
	}
	s.Destroy()

	optimized := filepath.Join(t.TempDir(), "optimized.onnx")
	variants := []struct {
		name  string
		path  string
		level onnx.GraphOptimizationLevel
		tiles int
		dump  string
	}{
		{"float16 rounding simulation", c.sim, onnx.GraphOptimizationLevelEnableExtended, len(tiles), ""},
		{"float16 graph on ONNX Runtime", filepath.Join(c.model, model.MixedFile), onnx.GraphOptimizationLevelEnableAll, min(c.mixed, len(tiles)), optimized},
	}
	for _, v := range variants {
		s := fp16Session(t, v.path, in, out, v.level, v.dump)
		worst, worstAt := math.Inf(1), ""
		var maxAbs, sum float64
		nonFinite := 0
		for i, tl := range tiles[:v.tiles] {
			got := deblur.NewTensor(tl.blur.Shape...)
			fp16Run(t, s, tl.blur, tl.prior, got)
			st := compareTile(got.Data, refs[i].Data)
			t.Logf("%s, %s: tile %s: PSNR %.2f dB, max abs error %.2e, non-finite %d", c.name, v.name, tl.name, st.psnr, st.maxAbs, st.nonFinite)
			if st.nonFinite > 0 || st.psnr < fp16MinPSNR || st.maxAbs > fp16MaxAbs {
				t.Errorf("%s, %s: tile %s: PSNR %.2f dB (limit %.0f), max abs error %.3g (limit %.3g), %d non-finite values",
					c.name, v.name, tl.name, st.psnr, fp16MinPSNR, st.maxAbs, fp16MaxAbs, st.nonFinite)
			}
			if st.psnr < worst {
				worst, worstAt = st.psnr, tl.name
			}
			maxAbs, sum, nonFinite = math.Max(maxAbs, st.maxAbs), sum+st.psnr, nonFinite+st.nonFinite
		}
		s.Destroy()
		t.Logf("%s, %s: %d tiles of %dx%d: PSNR vs float32 worst %.2f dB (%s), mean %.2f dB; max abs error %.2e; non-finite values %d",
			c.name, v.name, v.tiles, c.tile, c.tile, worst, worstAt, sum/float64(v.tiles), maxAbs, nonFinite)
	}

	// What ONNX Runtime made of the float16 graph: its inserted casts.
	nodes, err := model.ReadNodes(optimized)
	if err != nil {
		t.Fatal(err)
	}
	inserted := 0
	for _, n := range nodes {
		if n.OpType == "Cast" && strings.HasPrefix(n.Name, "InsertedPrecisionFreeCast") {
			inserted++
		}
	}
	mixedNodes, err := model.ReadNodes(filepath.Join(c.model, model.MixedFile))
	if err != nil {
		t.Fatal(err)
	}
	types, err := model.ReadTypes(filepath.Join(c.model, model.MixedFile))
	if err != nil {
		t.Fatal(err)
	}
	half := 0
	for _, n := range mixedNodes {
		if model.ComputeType(n, types) == model.ElemFloat16 && n.OpType != "Cast" {
			half++
		}
	}
	t.Logf("%s: ONNX Runtime %s CPU inserted %d casts into the float16 graph (%d float16 nodes); it runs their arithmetic in float32, hence the simulation. %s",
		c.name, ortVersion(), inserted, half, time.Since(t0).Round(time.Second))
}

func ortVersion() string { return onnx.GetVersion() }
