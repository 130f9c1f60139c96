package ort

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"hidiffd/deblur"
	"hidiffd/model"
)

// These tests run the real exported graphs against the PyTorch reference
// outputs the exporter writes next to them:
//
//	<models>/<preset>/{prior,transformer}.onnx
//	<models>/<preset>/fixtures/manifest.json (+ raw little-endian float32 files)
//
// <models> is $HIDIFFD_TEST_MODELS, else <repo root>/build/models; without
// either the tests skip and say how to produce them.

// ModelsEnv names the folder of exported presets for the tests.
const modelsEnv = "HIDIFFD_TEST_MODELS"

// Parity bounds, max abs error against PyTorch (float32 both sides; the
// difference is summation order and fused kernels).
const (
	priorTol = 1e-4
	sharpTol = 2e-4
)

type manifest struct {
	Preset string        `json:"preset"`
	Cases  []fixtureCase `json:"cases"`
}

type fixtureCase struct {
	Name   string `json:"name"`
	Height int64  `json:"height"`
	Width  int64  `json:"width"`
	Blur   string `json:"blur"`
	Noise  string `json:"noise"`
	Prior  string `json:"prior"`
	Sharp  string `json:"sharp"`
}

// modelsRoot returns the folder holding preset folders, or skips.
func modelsRoot(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv(modelsEnv); dir != "" {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("$%s: %v", modelsEnv, err)
		}
	}
	dir := findModelsRoot()
	if dir == "" {
		t.Skipf("no exported models: run `make models` (writes build/models/<preset>/ with fixtures) or set $%s to a folder of preset folders", modelsEnv)
	}
	return dir
}

// findModelsRoot is $HIDIFFD_TEST_MODELS, else <repo root>/build/models if
// it exists, else "".
func findModelsRoot() string {
	if dir := os.Getenv(modelsEnv); dir != "" {
		return dir
	}
	if root := repoRoot(); root != "" {
		dir := filepath.Join(root, "build", "models")
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	return ""
}

// repoRoot is the nearest folder above the current one with a go.mod.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// presetDir returns <models>/<preset>, or skips when that preset was not
// exported.
func presetDir(t testing.TB, preset string) string {
	t.Helper()
	dir := filepath.Join(modelsRoot(t), preset)
	if _, err := os.Stat(filepath.Join(dir, model.PriorFile)); err != nil {
		t.Skipf("preset %q not exported (%v): run `make models`", preset, err)
	}
	return dir
}

func readF32(path string, shape ...int64) (deblur.Tensor, error) {
	t := deblur.NewTensor(shape...)
	raw, err := os.ReadFile(path)
	if err != nil {
		return t, err
	}
	if len(raw) != 4*len(t.Data) {
		return t, fmt.Errorf("%s: %d bytes, shape %v needs %d", path, len(raw), shape, 4*len(t.Data))
	}
	for i := range t.Data {
		t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return t, nil
}

// maxAbsDiff also reports the first non-finite value, which would otherwise
// compare as "no error" (NaN > tol is false).
func maxAbsDiff(got, want []float32) (maxErr float64, at int, err error) {
	if len(got) != len(want) {
		return 0, 0, fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return 0, i, fmt.Errorf("value %d is %v", i, g)
		}
		if d := math.Abs(g - w); d > maxErr {
			maxErr, at = d, i
		}
	}
	return maxErr, at, nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestParity(t *testing.T) {
	root := modelsRoot(t)
	// folder -> preset; s-decomposed-ln is s exported with
	// --layernorm decomposed (for TensorRT 8.5): the same function in
	// elementary ops
	folders := [][2]string{{"s", "s"}, {"s-decomposed-ln", "s"}, {"gopro", "gopro"}, {"realblur", "realblur"}}
	found := 0
	for _, f := range folders {
		folder, preset := f[0], f[1]
		t.Run(folder, func(t *testing.T) {
			if testing.Short() && preset != "s" {
				t.Skip("-short: only the small preset")
			}
			dir := filepath.Join(root, folder)
			if _, err := os.Stat(filepath.Join(dir, model.PriorFile)); err != nil {
				t.Skipf("%q not exported in %s", folder, root)
			}
			found++
			testParity(t, dir, preset)
		})
	}
	if found == 0 {
		t.Skipf("no preset folders (%v) in %s: run `make models`", folders, root)
	}
}

func testParity(t *testing.T, dir, preset string) {
	raw, err := os.ReadFile(filepath.Join(dir, "fixtures", "manifest.json"))
	if err != nil {
		t.Fatalf("fixtures: %v (the exporter writes them with the models)", err)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(m.Cases) == 0 {
		t.Fatal("manifest.json lists no cases")
	}

	b, err := Open(dir, testOptions(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()

	info := b.Info()
	t.Logf("info: %+v", info)
	if info.Preset != preset || m.Preset != preset {
		t.Errorf("preset: metadata %q, manifest %q, folder %q", info.Preset, m.Preset, preset)
	}
	if info.Model == "" || info.Version == "" || info.TrainingData == "" {
		t.Errorf("model/version/training_data metadata missing: %+v", info)
	}
	if info.Timesteps <= 0 || info.PadMultiple%8 != 0 || info.PriorTokens != 16 || info.PriorChannels != 256 {
		t.Errorf("unexpected model facts: %+v", info)
	}
	if !sha256Hex.MatchString(info.WeightsSHA256) {
		t.Errorf("weights_sha256 %q is not a sha256", info.WeightsSHA256)
	}

	ctx := context.Background()
	fx := filepath.Join(dir, "fixtures")
	tok, ch := int64(info.PriorTokens), int64(info.PriorChannels)
	for _, c := range m.Cases {
		t.Run(c.Name, func(t *testing.T) {
			img := []int64{1, 3, c.Height, c.Width}
			var blur, noise, prior, sharp deblur.Tensor
			for _, f := range []struct {
				dst   *deblur.Tensor
				path  string
				shape []int64
			}{
				{&blur, c.Blur, img}, {&noise, c.Noise, []int64{1, tok, ch}},
				{&prior, c.Prior, []int64{1, tok, ch}}, {&sharp, c.Sharp, img},
			} {
				if *f.dst, err = readF32(filepath.Join(fx, f.path), f.shape...); err != nil {
					t.Fatal(err)
				}
			}

			start := time.Now()
			gotPrior, err := b.Prior(ctx, blur, noise)
			if err != nil {
				t.Fatalf("Prior: %v", err)
			}
			priorTime := time.Since(start)
			pe, pi, err := maxAbsDiff(gotPrior.Data, prior.Data)
			if err != nil {
				t.Fatalf("prior: %v", err)
			}

			// The fixture prior, not ours: the transformer is checked on its
			// own, whatever the prior's error.
			start = time.Now()
			gotSharp, err := b.Transform(ctx, blur, prior)
			if err != nil {
				t.Fatalf("Transform: %v", err)
			}
			sharpTime := time.Since(start)
			se, si, err := maxAbsDiff(gotSharp.Data, sharp.Data)
			if err != nil {
				t.Fatalf("sharp: %v", err)
			}

			t.Logf("%s %s: prior max abs err %.3g (at %d; tol %g, %v), sharp max abs err %.3g (at %d; tol %g, %v)",
				preset, c.Name, pe, pi, priorTol, priorTime.Round(time.Millisecond), se, si, sharpTol, sharpTime.Round(time.Millisecond))
			if pe > priorTol {
				t.Errorf("prior: max abs err %.3g at %d (got %v, want %v) > %g", pe, pi, gotPrior.Data[pi], prior.Data[pi], priorTol)
			}
			if se > sharpTol {
				t.Errorf("sharp: max abs err %.3g at %d (got %v, want %v) > %g", se, si, gotSharp.Data[si], sharp.Data[si], sharpTol)
			}
		})
	}
}

// TestCancelInFlight checks that cancelling the context stops a run ORT has
// already started (RunOptions terminate), and that the backend still works.
func TestCancelInFlight(t *testing.T) {
	b, err := Open(presetDir(t, "s"), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	prior := deblur.NewTensor(1, 16, 256)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.Transform(ctx, ramp(1, 3, 512, 512), prior)
	took := time.Since(start)
	if err == nil {
		t.Skipf("the run finished in %v, before the cancellation", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Transform: %v, want context.DeadlineExceeded", err)
	}
	t.Logf("stopped after %v: %v", took, err)
	if _, err := b.Transform(context.Background(), ramp(1, 3, 64, 64), prior); err != nil {
		t.Errorf("Transform after a stopped run: %v", err)
	}
}

func benchBackend(b *testing.B) *Backend {
	be, err := Open(presetDir(b, "s"), testOptions(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

func BenchmarkPriorS(b *testing.B) {
	be := benchBackend(b)
	ctx := context.Background()
	blur := ramp(1, 3, 256, 256)
	noise := deblur.Tensor{Shape: []int64{1, 16, 256}, Data: deblur.StartingNoise(1, 16*256)}
	// The first run at a new shape is slower (docs/ARCHITECTURE.md); keep it out.
	if _, err := be.Prior(ctx, blur, noise); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := be.Prior(ctx, blur, noise); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransformS256(b *testing.B) {
	be := benchBackend(b)
	ctx := context.Background()
	blur := ramp(1, 3, 256, 256)
	noise := deblur.Tensor{Shape: []int64{1, 16, 256}, Data: deblur.StartingNoise(1, 16*256)}
	prior, err := be.Prior(ctx, blur, noise)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := be.Transform(ctx, blur, prior); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := be.Transform(ctx, blur, prior); err != nil {
			b.Fatal(err)
		}
	}
}
