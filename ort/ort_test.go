package ort

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"hidiffd/deblur"
	"hidiffd/internal/tinyonnx"
	"hidiffd/model"
)

// testOptions finds the ONNX Runtime library the way the daemon does, and
// skips when it is absent: it is fetched by scripts/setup-ort.sh (npm), which
// a bare checkout may not have run.
func testOptions(t testing.TB) Options {
	t.Helper()
	lib, err := DefaultLibraryPath()
	if err != nil {
		t.Skipf("no ONNX Runtime library (run scripts/setup-ort.sh): %v", err)
	}
	// Two threads: the test machines are small and shared.
	return Options{LibraryPath: lib, IntraOpThreads: 2}
}

func openTiny(t *testing.T, edit func(p, tr *tinyonnx.Graph)) *Backend {
	t.Helper()
	opts := testOptions(t)
	b, err := Open(tinyonnx.TempModel(t, edit), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// mustErr fails unless err is non-nil and mentions every want.
func mustErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", want)
	}
	t.Logf("error: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func ramp(shape ...int64) deblur.Tensor {
	t := deblur.NewTensor(shape...)
	for i := range t.Data {
		t.Data[i] = float32(i%97) / 97
	}
	return t
}

func mean(xs []float32) float64 {
	s := 0.0
	for _, x := range xs {
		s += float64(x)
	}
	return s / float64(len(xs))
}

func TestOpenReadsMetadata(t *testing.T) {
	b := openTiny(t, func(p, tr *tinyonnx.Graph) {
		p.Meta["pad_multiple"] = "16" // transformer keeps 8: the lcm wins
	})
	want := deblur.ModelInfo{
		Model: "HI-Diff", Version: "test-1", Preset: "tiny", Timesteps: 4,
		PadMultiple: 16, PriorTokens: 16, PriorChannels: 256,
		WeightsSHA256: "0123abcd", TrainingData: "none (test graph)",
	}
	if got := b.Info(); got != want {
		t.Errorf("Info() = %+v, want %+v", got, want)
	}
	pm, tm := b.Metadata()
	if pm["graph"] != "prior" || tm["graph"] != "transformer" || pm["pad_multiple"] != "16" {
		t.Errorf("Metadata() = %v, %v", pm, tm)
	}
	if b.Name() != "onnxruntime" {
		t.Errorf("Name() = %q", b.Name())
	}
	if !strings.HasPrefix(b.RuntimeVersion(), "1.") {
		t.Errorf("RuntimeVersion() = %q", b.RuntimeVersion())
	}
	if b.Threads() != 2 {
		t.Errorf("Threads() = %d, want 2", b.Threads())
	}
	t.Logf("ONNX Runtime %s from %s", b.RuntimeVersion(), b.LibraryPath())
}

func TestOpenDefaultsPriorSize(t *testing.T) {
	// Without prior_tokens/prior_channels the graphs' fixed shapes say it.
	b := openTiny(t, func(p, tr *tinyonnx.Graph) {
		for _, g := range []*tinyonnx.Graph{p, tr} {
			delete(g.Meta, "prior_tokens")
			delete(g.Meta, "prior_channels")
			delete(g.Meta, "graph") // optional too
		}
	})
	if i := b.Info(); i.PriorTokens != 16 || i.PriorChannels != 256 {
		t.Errorf("prior size %dx%d, want 16x256", i.PriorTokens, i.PriorChannels)
	}
}

func TestRunTiny(t *testing.T) {
	b := openTiny(t, nil)
	ctx := context.Background()
	for _, hw := range [][2]int64{{8, 8}, {16, 24}, {8, 8}} { // shapes change and come back
		blur := ramp(1, 3, hw[0], hw[1])
		noise := deblur.Tensor{Shape: []int64{1, 16, 256}, Data: deblur.StartingNoise(7, 16*256)}
		prior, err := b.Prior(ctx, blur, noise)
		if err != nil {
			t.Fatalf("Prior: %v", err)
		}
		if got := prior.Shape; len(got) != 3 || got[1] != 16 || got[2] != 256 {
			t.Fatalf("prior shape %v", got)
		}
		m := mean(blur.Data)
		for i, v := range prior.Data {
			if want := 0.5*float64(noise.Data[i]) + m; math.Abs(float64(v)-want) > 1e-5 {
				t.Fatalf("prior[%d] = %v, want %v", i, v, want)
			}
		}
		sharp, err := b.Transform(ctx, blur, prior)
		if err != nil {
			t.Fatalf("Transform: %v", err)
		}
		if sharp.Len() != blur.Len() || sharp.Shape[2] != hw[0] || sharp.Shape[3] != hw[1] {
			t.Fatalf("sharp shape %v, blur %v", sharp.Shape, blur.Shape)
		}
		pm := mean(prior.Data)
		for i, v := range sharp.Data {
			if want := float64(blur.Data[i]) + pm; math.Abs(float64(v)-want) > 1e-5 {
				t.Fatalf("sharp[%d] = %v, want %v", i, v, want)
			}
		}
	}
}

func TestShapeValidation(t *testing.T) {
	b := openTiny(t, nil)
	ctx := context.Background()
	okBlur := ramp(1, 3, 16, 8)
	okPrior := deblur.NewTensor(1, 16, 256)
	short := deblur.NewTensor(1, 3, 8, 8)
	short.Data = short.Data[:10]
	cases := []struct {
		name        string
		blur, prior deblur.Tensor
		want        []string
	}{
		{"height off the pad multiple", ramp(1, 3, 12, 8), okPrior, []string{"blur", "12x8", "multiples of 8"}},
		{"width off the pad multiple", ramp(1, 3, 8, 20), okPrior, []string{"8x20", "multiples of 8"}},
		{"grey image", ramp(1, 1, 8, 8), okPrior, []string{"blur", "[1 1 8 8]", "[1 3 H W]"}},
		{"batch of two", ramp(2, 3, 8, 8), okPrior, []string{"[2 3 8 8]"}},
		{"rank 3 image", ramp(3, 8, 8), okPrior, []string{"[3 8 8]"}},
		{"data shorter than shape", short, okPrior, []string{"blur", "needs 192 values, has 10"}},
		{"prior tokens", okBlur, deblur.NewTensor(1, 8, 256), []string{"[1 8 256]", "[1 16 256]"}},
		{"prior flat", okBlur, deblur.NewTensor(16 * 256), []string{"[4096]"}},
		{"empty prior", okBlur, deblur.Tensor{}, []string{"expected [1 16 256]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.Prior(ctx, c.blur, c.prior)
			mustErr(t, err, append([]string{"Prior"}, c.want...)...)
			_, err = b.Transform(ctx, c.blur, c.prior)
			mustErr(t, err, append([]string{"Transform"}, c.want...)...)
		})
	}
}

func TestCancelledContext(t *testing.T) {
	b := openTiny(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.Prior(ctx, ramp(1, 3, 8, 8), deblur.NewTensor(1, 16, 256))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Prior with a cancelled context: %v, want context.Canceled", err)
	}
	_, err = b.Transform(ctx, ramp(1, 3, 8, 8), deblur.NewTensor(1, 16, 256))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Transform with a cancelled context: %v, want context.Canceled", err)
	}
	// The backend is still usable afterwards.
	if _, err := b.Prior(context.Background(), ramp(1, 3, 8, 8), deblur.NewTensor(1, 16, 256)); err != nil {
		t.Errorf("Prior after a cancelled call: %v", err)
	}
}

func TestCloseTwice(t *testing.T) {
	b := openTiny(t, nil)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := b.Prior(context.Background(), ramp(1, 3, 8, 8), deblur.NewTensor(1, 16, 256))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Prior after Close: %v, want ErrClosed", err)
	}
	_, err = b.Transform(context.Background(), ramp(1, 3, 8, 8), deblur.NewTensor(1, 16, 256))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Transform after Close: %v, want ErrClosed", err)
	}
}

func TestTwoBackendsCoexist(t *testing.T) {
	opts := testOptions(t)
	dirs := []string{tinyonnx.TempModel(t, nil), tinyonnx.TempModel(t, func(p, tr *tinyonnx.Graph) {
		p.Meta["preset"], tr.Meta["preset"] = "other", "other"
	})}
	// Opened at once: the process-wide environment must come up once.
	backends := make([]*Backend, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Go(func() { backends[i], errs[i] = Open(dir, opts) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer backends[i].Close()
	}
	if backends[1].Info().Preset != "other" {
		t.Errorf("second backend preset %q", backends[1].Info().Preset)
	}
	if err := backends[0].Close(); err != nil {
		t.Fatal(err)
	}
	// Closing one leaves the other (and the environment) working.
	if _, err := backends[1].Prior(context.Background(), ramp(1, 3, 8, 8), deblur.NewTensor(1, 16, 256)); err != nil {
		t.Errorf("Prior on the remaining backend: %v", err)
	}
	// And a new one can still be opened.
	b, err := Open(dirs[0], opts)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	b.Close()
}

func TestMissingModelFile(t *testing.T) {
	opts := testOptions(t)
	for _, name := range []string{model.PriorFile, model.TransformerFile} {
		dir := tinyonnx.TempModel(t, nil)
		path := filepath.Join(dir, name)
		os.Remove(path)
		_, err := Open(dir, opts)
		mustErr(t, err, path, "no such file")
	}
	_, err := Open(filepath.Join(t.TempDir(), "nowhere"), opts)
	mustErr(t, err, filepath.Join("nowhere", model.PriorFile))
}

func TestNotAnONNXFile(t *testing.T) {
	dir := tinyonnx.TempModel(t, nil)
	path := filepath.Join(dir, model.TransformerFile)
	if err := os.WriteFile(path, []byte("this is not protobuf"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testOptions(t))
	mustErr(t, err, path)
}

func TestLibraryPath(t *testing.T) {
	dir := tinyonnx.TempModel(t, nil)
	missing := filepath.Join(t.TempDir(), "lib", "libonnxruntime.so.1")

	_, err := Open(dir, Options{LibraryPath: missing})
	mustErr(t, err, missing, "no such file")

	t.Setenv(LibraryEnv, missing)
	_, err = DefaultLibraryPath()
	mustErr(t, err, missing, LibraryEnv)
	_, err = Open(dir, Options{})
	mustErr(t, err, missing)

	// A file that is not a shared library: dlopen's complaint (or, once the
	// real library is loaded, the one-runtime-per-process rule) names it.
	junk := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(junk, []byte("not ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{LibraryPath: junk})
	mustErr(t, err, junk)
}

func TestDefaultLibraryPathSearchesUpward(t *testing.T) {
	t.Setenv(LibraryEnv, "")
	p, err := DefaultLibraryPath()
	if err != nil {
		// The error must list the places it looked.
		mustErr(t, err, "tried", thirdPartyRel(), systemLibraryPath)
		t.Skipf("library not installed: %v", err)
	}
	if !strings.HasSuffix(p, thirdPartyRel()) && p != systemLibraryPath {
		t.Errorf("DefaultLibraryPath() = %q", p)
	}
	// From a folder with no library above it, the search must fail and say
	// where it looked, unless the system copy is installed.
	t.Chdir(t.TempDir())
	if p2, err := DefaultLibraryPath(); err == nil {
		// Found from the test binary's folder or the system path.
		if p2 != systemLibraryPath && !strings.HasSuffix(p2, thirdPartyRel()) {
			t.Errorf("from a temp folder: %q", p2)
		}
	} else {
		mustErr(t, err, "tried", thirdPartyRel(), systemLibraryPath)
	}
}
