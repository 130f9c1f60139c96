package trt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"hidiffd/deblur"
	"hidiffd/model"
	"hidiffd/trt/internal/fakeabi"
)

// These tests drive the real Go side of the cgo boundary (bridge.go,
// runtime.go, worker.go, backend.go) against a FAKE C implementation of
// hidiff_trt.h (internal/fakeabi): no TensorRT, no GPU. Run them with the
// race detector too:
//
//	go test -race ./trt/
//	GODEBUG=cgocheck=1 go test ./trt/      (cgocheck=1 is Go's default)
//
// The stricter cgocheck2 (every store of a Go pointer into C memory) is a
// build-time experiment: GOEXPERIMENT=cgocheck2 go test ./trt/.

// fakeMu serialises the tests that use the fake's global knobs.
var fakeMu sync.Mutex

func useFake(t *testing.T) Options {
	t.Helper()
	fakeMu.Lock()
	fakeabi.Reset()
	t.Cleanup(func() {
		c := fakeabi.Read()
		if c.ThreadSwitches != 0 {
			t.Errorf("%d shim calls ran off the runtime's worker thread", c.ThreadSwitches)
		}
		if c.Runtimes != 0 || c.Engines != 0 {
			t.Errorf("leaked handles: %d runtimes, %d engines", c.Runtimes, c.Engines)
		}
		fakeabi.Reset()
		fakeMu.Unlock()
	})
	return Options{api: fakeabi.API()}
}

// plan writes a fake plan (see fake_hidiff_trt.c).
func plan(op string, lines ...string) []byte {
	return []byte("HIDIFF-FAKE-PLAN 1\nop " + op + "\n" + strings.Join(lines, "\n") + "\n")
}

var (
	priorPlan = plan("prior",
		"in blur 4 1 3 -1 -1 min 1 3 8 8 opt 1 3 32 32 max 1 3 64 64",
		"in noise 3 1 16 256",
		"out prior 3 1 16 256")
	transformerPlan = plan("transformer",
		"in blur 4 1 3 -1 -1 min 1 3 8 8 opt 1 3 32 32 max 1 3 64 64",
		"in prior 3 1 16 256",
		"out sharp 4 1 3 -1 -1")
)

func TestWithoutTensorRTTag(t *testing.T) {
	if shimAPI() != nil {
		t.Skip("built with -tags tensorrt")
	}
	if err := Available(); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("Available = %v", err)
	}
	_, err := OpenRuntime(Options{})
	if !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "rebuild with -tags tensorrt") {
		t.Fatalf("OpenRuntime = %v", err)
	}
}

func TestRuntimeLifecycle(t *testing.T) {
	opts := useFake(t)
	var mu sync.Mutex
	var logs []string
	opts.Log = func(level, msg string) {
		mu.Lock()
		logs = append(logs, level+": "+msg)
		mu.Unlock()
	}
	rt, err := OpenRuntime(opts)
	if err != nil {
		t.Fatal(err)
	}
	d := rt.Device()
	if d.GPU != "Fake GPU" || d.TensorRT != "10.3.0" || d.CUDADriver != "12.4" || d.ComputeCapability != "8.7" || d.Impl != "fake" {
		t.Errorf("device = %+v", d)
	}
	if c := fakeabi.Read(); c.Runtimes != 1 {
		t.Errorf("live runtimes = %d", c.Runtimes)
	}
	mu.Lock()
	if len(logs) != 1 || !strings.HasPrefix(logs[0], "warn: fake TensorRT runtime opened") {
		t.Errorf("logs = %q", logs)
	}
	mu.Unlock()
	e, err := rt.LoadEngine(priorPlan)
	if err != nil {
		t.Fatal(err)
	}
	// Closing the runtime closes the engine it still has.
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rt.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("engine Close after runtime Close: %v", err)
	}
	if _, err := rt.LoadEngine(priorPlan); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadEngine after Close = %v", err)
	}
}

func TestOpenErrorsCrossTheBoundary(t *testing.T) {
	opts := useFake(t)
	fakeabi.FailOpen(int(StatusLibrary), "TensorRT library not usable; tried:\n  libnvinfer.so.10: cannot open shared object file")
	_, err := OpenRuntime(opts)
	if StatusOf(err) != StatusLibrary || !strings.Contains(err.Error(), "libnvinfer.so.10: cannot open shared object file") {
		t.Fatalf("err = %v (status %v)", err, StatusOf(err))
	}
	if !errors.Is(fmt.Errorf("wrapped: %w", err), &Error{Status: StatusLibrary}) {
		t.Error("errors.Is by status fails through wrapping")
	}
	fakeabi.Reset()
	opts.Device = 3
	_, err = OpenRuntime(opts)
	if StatusOf(err) != StatusNoDevice || !strings.Contains(err.Error(), "CUDA device 3 does not exist") {
		t.Fatalf("device 3: %v", err)
	}
}

func TestEngineShapesAndErrors(t *testing.T) {
	opts := useFake(t)
	rt, err := OpenRuntime(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	if _, err := rt.LoadEngine([]byte("not a plan")); StatusOf(err) != StatusDeserialize || !NeedsBuild(err) {
		t.Errorf("garbage plan: %v", err)
	}
	if _, err := rt.LoadEngine(nil); StatusOf(err) != StatusInvalid {
		t.Errorf("empty plan: %v", err)
	}

	e, err := rt.LoadEngine(transformerPlan)
	if err != nil {
		t.Fatal(err)
	}
	ts := e.Tensors()
	if len(ts) != 3 || ts[0].Name != "blur" || !ts[0].Input || ts[0].DType != DTFloat ||
		fmt.Sprint(ts[0].Dims) != "[1 3 -1 -1]" || fmt.Sprint(ts[0].ProfileMax) != "[1 3 64 64]" || ts[2].Input {
		t.Errorf("tensors = %+v", ts)
	}
	out := func(n int) func([]int64) []float32 {
		return func(shape []int64) []float32 {
			if n < 0 {
				n = volume(shape)
			}
			return make([]float32, n)
		}
	}
	blur, prior := make([]float32, 3*16*16), make([]float32, 16*256)
	if _, err := e.Infer([]int64{1, 3, 16, 16}, blur, []int64{1, 16, 256}, prior, out(-1)); StatusOf(err) != StatusInvalid {
		t.Errorf("Infer before Bind: %v", err)
	}
	if err := e.Bind("blur", "noise", "sharp"); StatusOf(err) != StatusShape || !strings.Contains(err.Error(), `no input named "noise"`) {
		t.Errorf("Bind(noise): %v", err)
	}
	if err := e.Bind("blur", "prior", "sharp"); err != nil {
		t.Fatal(err)
	}

	for i := range blur {
		blur[i] = float32(i%7) / 7
	}
	for i := range prior {
		prior[i] = 0.5
	}
	var got []float32
	shape, err := e.Infer([]int64{1, 3, 16, 16}, blur, []int64{1, 16, 256}, prior, func(s []int64) []float32 {
		got = make([]float32, volume(s))
		return got
	})
	if err != nil || fmt.Sprint(shape) != "[1 3 16 16]" {
		t.Fatalf("Infer = %v, %v", shape, err)
	}
	for i := range got {
		if got[i] != blur[i]+0.5 {
			t.Fatalf("sharp[%d] = %v, want %v", i, got[i], blur[i]+0.5)
		}
	}

	big := make([]float32, 3*128*128)
	_, err = e.Infer([]int64{1, 3, 128, 128}, big, []int64{1, 16, 256}, prior, out(-1))
	if StatusOf(err) != StatusShape || !strings.Contains(err.Error(), "outside the engine's optimisation profile [1 3 8 8]..[1 3 64 64]") {
		t.Errorf("shape outside profile: %v", err)
	}
	// After a refused shape the next good call sets shapes again.
	if _, err := e.Infer([]int64{1, 3, 16, 16}, blur, []int64{1, 16, 256}, prior, out(-1)); err != nil {
		t.Errorf("after a refused shape: %v", err)
	}
	if _, err := e.Infer([]int64{1, 3, 16, 16}, blur[:10], []int64{1, 16, 256}, prior, out(-1)); StatusOf(err) != StatusShape ||
		!strings.Contains(err.Error(), `"blur" has 10 values; the shapes set need 768`) {
		t.Errorf("short input: %v", err)
	}
	if _, err := e.Infer([]int64{1, 3, 16, 16}, blur, []int64{1, 16, 256}, prior, out(5)); StatusOf(err) != StatusShape {
		t.Errorf("short output buffer: %v", err)
	}
	fakeabi.FailNext("engine_run", int(StatusCUDA), "cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)")
	_, err = e.Infer([]int64{1, 3, 16, 16}, blur, []int64{1, 16, 256}, prior, out(-1))
	if StatusOf(err) != StatusCUDA || !strings.Contains(err.Error(), "CUDA_ERROR_ILLEGAL_ADDRESS") {
		t.Errorf("injected CUDA error: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second engine Close: %v", err)
	}
	if _, err := e.Infer([]int64{1, 3, 16, 16}, blur, []int64{1, 16, 256}, prior, out(-1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Infer after Close: %v", err)
	}
}

// buildFake builds a cache entry for a tiny model with the fake builder.
func buildFake(t *testing.T, opts Options, precision string) (*model.Model, Cache, Profile, *Entry) {
	t.Helper()
	m, err := model.Inspect(writeTinyModel(t))
	if err != nil {
		t.Fatal(err)
	}
	c := Cache{Dir: t.TempDir()}
	p := Profile{Min: Size{8, 8}, Opt: Size{32, 32}, Max: Size{32, 32}}
	opts.Builder = true
	rt, err := OpenRuntime(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	e, err := Build(rt, c, m, BuildSpec{Precision: precision, Profile: p, HidiffdVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return m, c, p, e
}

func TestBuildLoadRun(t *testing.T) {
	opts := useFake(t)
	progress, err := os.CreateTemp(t.TempDir(), "progress")
	if err != nil {
		t.Fatal(err)
	}
	opts.Progress = progress
	m, c, p, e := buildFake(t, opts, FP16)

	// The fake is TensorRT 10.3 by default: strongly typed, the transformer
	// from the float16 graph, no pins.
	sc := e.Sidecar
	tb := sc.Builds[TransformerEngine]
	if sc.HidiffdVersion != "test" || sc.Key.Precision != FP16 || sc.Key.Typing != Strong || sc.Key.ONNXPrecision != FP16 ||
		sc.Key.GPU != "Fake GPU" || sc.Preset != "tiny" || tb.FP16Layers == 0 || tb.FP32Layers == 0 || tb.PinnedFP32 != 0 ||
		sc.Builds[PriorEngine].FP16Layers != 0 || sc.ID != sc.Key.ID() {
		t.Errorf("sidecar = %+v", sc)
	}
	if last := fakeabi.Last(); last.Typing != CanStrong || last.FP32Names != "" {
		t.Errorf("the transformer build got %+v", last)
	}
	if b, _ := os.ReadFile(progress.Name()); !strings.Contains(string(b), "tensorrt: [I] fake build of") {
		t.Errorf("progress file = %q", b)
	}
	if _, err := os.Stat(c.TimingCachePath(DeviceInfo{TensorRT: "10.3.0", GPU: "Fake GPU", ComputeCapability: "8.7"})); err != nil {
		t.Errorf("timing cache not written: %v", err)
	}

	b, key, err := Load(m, c, FP16, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	if key != sc.Key || b.Name() != "tensorrt" || b.Precision() != FP16 || !strings.Contains(b.Describe(), "Fake GPU") {
		t.Errorf("key %+v, name %s, %s", key, b.Name(), b.Describe())
	}
	// The pipeline end to end: prior then transformer per tile.
	img := deblur.Image{W: 40, H: 24, Pix: make([]float32, 3*40*24)}
	for i := range img.Pix {
		img.Pix[i] = float32(i%11) / 22
	}
	out, st, err := deblur.Run(context.Background(), b, img, deblur.Options{Tile: 32, Overlap: 8, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Tiles != 2 || st.NonFinite != 0 || len(out.Pix) != len(img.Pix) {
		t.Errorf("stats %+v", st)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Prior(context.Background(), deblur.NewTensor(1, 3, 8, 8), deblur.NewTensor(1, 16, 256)); !errors.Is(err, ErrClosed) {
		t.Errorf("Prior after Close: %v", err)
	}

	// Another profile is another key: not cached.
	if _, _, err := Load(m, c, FP16, Profile{Min: Size{8, 8}, Opt: Size{64, 64}, Max: Size{64, 64}}, opts); !errors.Is(err, ErrNotCached) || !NeedsBuild(err) {
		t.Errorf("other profile: %v", err)
	}
	// A second build reuses the timing cache.
	opts.Builder = true
	rt, err := OpenRuntime(opts)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := Build(rt, c, m, BuildSpec{Precision: FP16, Profile: p})
	rt.Close()
	if err != nil || !e2.Sidecar.Builds[TransformerEngine].TimingCacheLoaded {
		t.Errorf("rebuild: %v, %+v", err, e2)
	}
}

// TestTypingVersionSplit builds and runs on fakes of each supported major:
// TensorRT 8.x weakly typed, FP16 from the float32 graph with the pins read
// from the float16 graph; 10.x and 11.x strongly typed, FP16 from the
// float16 graph with no pins; FP32 from the float32 graph everywhere. The
// shim's own refusals of the other mode cross the boundary by name.
func TestTypingVersionSplit(t *testing.T) {
	opts := useFake(t)
	for _, c := range []struct {
		version int
		typing  string
	}{{8601, Weak}, {100300, Strong}, {110100, Strong}} {
		for _, precision := range []string{FP16, FP32} {
			t.Run(fmt.Sprintf("TensorRT %d %s", c.version, precision), func(t *testing.T) {
				fakeabi.SetVersion(c.version)
				m, cache, p, e := buildFake(t, opts, precision)
				k := e.Sidecar.Key
				last := fakeabi.Last()
				res := e.Sidecar.Builds[TransformerEngine]
				name := fmt.Sprintf("TensorRT %s %s", k.TensorRT, precision)
				if k.Typing != c.typing || last.Typing != map[string]int{Weak: CanWeak, Strong: CanStrong}[c.typing] ||
					!strings.HasPrefix(e.Sidecar.ID, precision+"-"+c.typing+"-") {
					t.Errorf("%s: key %+v, last build %+v", name, k, last)
				}
				switch {
				case precision == FP32:
					if k.ONNXPrecision != FP32 || k.PinsONNX != "" || last.FP32Names != "" || res.FP16Layers != 0 {
						t.Errorf("%s: key %+v, last build %+v, %+v", name, k, last, res)
					}
				case c.typing == Weak:
					if k.ONNXPrecision != FP32 || k.PinsONNX == "" || res.PinnedFP32 == 0 ||
						!strings.Contains(last.FP32Names, "/attn/ReduceL2") || strings.Contains(last.FP32Names, "/attn/MatMul") {
						t.Errorf("%s: key %+v, last build %+v, %+v", name, k, last, res)
					}
				default:
					if k.ONNXPrecision != FP16 || k.PinsONNX != "" || last.FP32Names != "" || res.FP16Layers == 0 {
						t.Errorf("%s: key %+v, last build %+v, %+v", name, k, last, res)
					}
				}
				b, _, err := Load(m, cache, precision, p, opts)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				img := deblur.Image{W: 16, H: 16, Pix: make([]float32, 3*16*16)}
				if _, st, err := deblur.Run(context.Background(), b, img, deblur.Options{Tile: 16, Seed: 1}); err != nil || st.NonFinite != 0 {
					t.Errorf("%s: run %+v, %v", name, st, err)
				}
				b.Close()
			})
		}
	}
	// The shims refuse the other mode themselves (Go never asks: TypingFor).
	for _, c := range []struct {
		version int
		typing  string
		want    string
	}{{8601, Strong, "weakly typed only (TensorRT 8.x)"}, {110100, Weak, "strongly typed only (TensorRT 11)"}} {
		t.Run(fmt.Sprintf("TensorRT %d refuses %s", c.version, c.typing), func(t *testing.T) {
			fakeabi.SetVersion(c.version)
			rt, err := OpenRuntime(Options{api: opts.api, Builder: true})
			if err != nil {
				t.Fatal(err)
			}
			dir := writeTinyModel(t)
			_, err = rt.build(buildSpec{onnx: filepath.Join(dir, "transformer.onnx"), engine: filepath.Join(dir, "x.engine"), typing: c.typing,
				inputs: []InputProfile{imageProfile(Profile{Min: Size{8, 8}, Opt: Size{8, 8}, Max: Size{8, 8}}), fixedProfile("prior", 1, 16, 256)}})
			rt.Close()
			if StatusOf(err) != StatusInvalid || !strings.Contains(err.Error(), c.want) {
				t.Errorf("TensorRT %d asked for %s: %v", c.version, c.typing, err)
			}
		})
	}
}

// TestFP16NeedsTheFloat16Graph: without transformer.fp16.onnx, FP16 is
// refused before any build, with the command that writes it; FP32 builds.
func TestFP16NeedsTheFloat16Graph(t *testing.T) {
	opts := useFake(t)
	dir := writeTinyModel(t)
	os.Remove(filepath.Join(dir, model.MixedFile))
	m, err := model.Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts.Builder = true
	p := Profile{Min: Size{8, 8}, Opt: Size{16, 16}, Max: Size{16, 16}}
	for _, v := range []int{8601, 110100} {
		t.Run(fmt.Sprintf("TensorRT %d", v), func(t *testing.T) {
			fakeabi.SetVersion(v)
			rt, err := OpenRuntime(opts)
			if err != nil {
				t.Fatal(err)
			}
			c := Cache{Dir: t.TempDir()}
			_, err = Build(rt, c, m, BuildSpec{Precision: FP16, Profile: p})
			if !errors.Is(err, model.ErrNoMixed) || !strings.Contains(err.Error(), "python3 -m engine_build.precision mixed "+dir) {
				t.Errorf("TensorRT %d, FP16 without the float16 graph: %v", v, err)
			}
			if fakeabi.Read().Builds != 0 {
				t.Errorf("TensorRT %d: built before refusing", v)
			}
			if _, err := Build(rt, c, m, BuildSpec{Precision: FP32, Profile: p}); err != nil {
				t.Errorf("TensorRT %d, FP32: %v", v, err)
			}
			rt.Close()
			fakeabi.Reset()
		})
	}
}

func TestCorruptEngineNeedsRebuild(t *testing.T) {
	opts := useFake(t)
	m, c, p, e := buildFake(t, opts, FP16)

	// Same size, other bytes: the sidecar's sha256 catches it before TensorRT.
	path := e.Path(TransformerEngine)
	b, _ := os.ReadFile(path)
	b[len(b)-2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, key, err := Load(m, c, FP16, p, opts)
	if !errors.Is(err, ErrEngineMismatch) || !NeedsBuild(err) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt engine: %v", err)
	}
	if err := c.Invalidate(key); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(key); !errors.Is(err, ErrNotCached) {
		t.Errorf("after Invalidate: %v", err)
	}

	// A plan TensorRT refuses (the fake's equivalent of another version).
	m, c, p, e = buildFake(t, opts, FP16)
	bad := []byte(strings.Repeat("x", int(e.Sidecar.Engines[PriorEngine].Bytes)))
	if err := os.WriteFile(e.Path(PriorEngine), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	sc := e.Sidecar
	staged, _ := c.Stage()
	for _, f := range []string{PriorEngine, TransformerEngine} {
		data, _ := os.ReadFile(e.Path(f))
		os.WriteFile(staged+"/"+f, data, 0o644)
	}
	e, err = c.Commit(staged, sc) // a consistent sidecar for the bad plan
	if err != nil {
		t.Fatal(err)
	}
	rt, err := OpenRuntime(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if _, err := OpenEntry(rt, m, e, p); StatusOf(err) != StatusDeserialize || !NeedsBuild(err) {
		t.Errorf("undeserialisable plan: %v", err)
	}
	// The runtime stays usable after a refused entry.
	if eng, err := rt.LoadEngine(priorPlan); err != nil {
		t.Errorf("runtime after refused entry: %v", err)
	} else {
		eng.Close()
	}
}

func TestEngineContractCheck(t *testing.T) {
	info := deblur.ModelInfo{PriorTokens: 16, PriorChannels: 256, PadMultiple: 8}
	need := Profile{Min: Size{8, 8}, Opt: Size{32, 32}, Max: Size{64, 64}}
	img := func(name string, input bool, max int64) TensorDesc {
		t := TensorDesc{Name: name, Input: input, DType: DTFloat, Linear: true, Dims: []int64{1, 3, -1, -1}}
		if input {
			t.ProfileMin, t.ProfileOpt, t.ProfileMax = []int64{1, 3, 8, 8}, []int64{1, 3, 32, 32}, []int64{1, 3, max, max}
		}
		return t
	}
	pri := func(name string, input bool) TensorDesc {
		t := TensorDesc{Name: name, Input: input, DType: DTFloat, Linear: true, Dims: []int64{1, 16, 256}}
		if input {
			t.ProfileMin, t.ProfileOpt, t.ProfileMax = t.Dims, t.Dims, t.Dims
		}
		return t
	}
	good := []TensorDesc{img("blur", true, 64), pri("prior", true), img("sharp", false, 0)}
	if err := checkEngine(model.TransformerIO, good, info, need); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		ts   []TensorDesc
		want string
	}{
		"small profile": {[]TensorDesc{img("blur", true, 32), pri("prior", true), img("sharp", false, 0)}, "configured tiles need"},
		"prior graph":   {[]TensorDesc{img("blur", true, 64), pri("noise", true), pri("prior", false)}, `"prior" is an output, the contract wants an input (engines swapped?)`},
		"half": {[]TensorDesc{img("blur", true, 64), pri("prior", true), func() TensorDesc {
			t := img("sharp", false, 0)
			t.DType = DTHalf
			return t
		}()}, "float16"},
		"tokens": {[]TensorDesc{img("blur", true, 64), func() TensorDesc {
			t := pri("prior", true)
			t.Dims = []int64{1, 4, 256}
			return t
		}(), img("sharp", false, 0)}, "the model wants [1 16 256]"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if err := checkEngine(model.TransformerIO, c.ts, info, need); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v (want %q)", name, err, c.want)
			}
		})
	}
}

// TestConcurrentUse shares backends between goroutines (the pipeline never
// does, but Close and metrics may race a frame) and runs several runtimes
// at once; run it with -race. Every shim call must land on its runtime's
// worker thread (checked by the fake in useFake's cleanup).
func TestConcurrentUse(t *testing.T) {
	opts := useFake(t)
	m, c, p, _ := buildFake(t, opts, FP32)
	var backends []*Backend
	for i := 0; i < 3; i++ {
		b, _, err := Load(m, c, FP32, p, opts)
		if err != nil {
			t.Fatal(err)
		}
		backends = append(backends, b)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			b := backends[g%len(backends)]
			for i := 0; i < 40; i++ {
				h := int64(8 * (1 + (g+i)%4))
				blur := deblur.NewTensor(1, 3, h, 16)
				for k := range blur.Data {
					blur.Data[k] = float32(g)
				}
				noise := deblur.NewTensor(1, 16, 256)
				pr, err := b.Prior(context.Background(), blur, noise)
				if err != nil {
					errs <- err
					return
				}
				// prior = 0.5*noise + mean(blur) = g
				if pr.Data[0] != float32(g) {
					errs <- fmt.Errorf("goroutine %d: prior %v", g, pr.Data[0])
					return
				}
				sh, err := b.Transform(context.Background(), blur, pr)
				if err != nil {
					errs <- err
					return
				}
				if fmt.Sprint(sh.Shape) != fmt.Sprint(blur.Shape) || sh.Data[len(sh.Data)-1] != 2*float32(g) {
					errs <- fmt.Errorf("goroutine %d: sharp %v %v", g, sh.Shape, sh.Data[0])
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Close while others may still call: later calls fail cleanly.
	var cw sync.WaitGroup
	for _, b := range backends {
		cw.Add(2)
		go func() { defer cw.Done(); b.Close() }()
		go func() {
			defer cw.Done()
			_, err := b.Prior(context.Background(), deblur.NewTensor(1, 3, 8, 8), deblur.NewTensor(1, 16, 256))
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("Prior racing Close: %v", err)
			}
		}()
	}
	cw.Wait()
	if _, err := backends[0].Transform(context.Background(), deblur.NewTensor(1, 3, 8, 8), deblur.NewTensor(1, 16, 256)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if n := fakeabi.Read().Calls; n < 12*40*2 {
		t.Errorf("only %d shim calls", n)
	}
}

func TestBackendRefusesBadTensors(t *testing.T) {
	opts := useFake(t)
	m, c, p, _ := buildFake(t, opts, FP32)
	b, _, err := Load(m, c, FP32, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if _, err := b.Prior(ctx, deblur.NewTensor(1, 3, 12, 16), deblur.NewTensor(1, 16, 256)); err == nil || !strings.Contains(err.Error(), "multiples of 8") {
		t.Errorf("unpadded: %v", err)
	}
	if _, err := b.Transform(ctx, deblur.NewTensor(1, 3, 8, 8), deblur.NewTensor(1, 4, 256)); err == nil || !strings.Contains(err.Error(), "expected [1 16 256]") {
		t.Errorf("prior shape: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Prior(cctx, deblur.NewTensor(1, 3, 8, 8), deblur.NewTensor(1, 16, 256)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// A tile larger than the engine's profile is the shim's shape error.
	if _, err := b.Prior(ctx, deblur.NewTensor(1, 3, 64, 64), deblur.NewTensor(1, 16, 256)); StatusOf(err) != StatusShape {
		t.Errorf("outside profile: %v", err)
	}
}
