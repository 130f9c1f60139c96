package trt

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"hidiffd/model"
)

func testKey() Key {
	return Key{
		PriorONNX: strings.Repeat("a", 64), TransformerONNX: strings.Repeat("b", 64),
		TensorRT: "10.3.0", GPU: "Orin", ComputeCapability: "8.7", Precision: FP16, Typing: Strong, ONNXPrecision: FP16,
		Profile: Profile{Min: Size{16, 16}, Opt: Size{384, 384}, Max: Size{384, 384}}, Recipe: Recipe,
	}
}

func TestKeyIDCoversEveryField(t *testing.T) {
	base := testKey()
	id := base.ID()
	if !strings.HasPrefix(id, "fp16-strong-384x384-") || len(id) != len("fp16-strong-384x384-")+16 {
		t.Errorf("ID = %q", id)
	}
	if base.ID() != id {
		t.Error("ID not stable")
	}
	// Every field of the key must change the ID: a reused engine built for
	// another GPU, TensorRT, model, precision or profile is the bug this
	// cache exists to prevent.
	edits := map[string]func(k *Key){
		"prior":     func(k *Key) { k.PriorONNX = strings.Repeat("c", 64) },
		"trans":     func(k *Key) { k.TransformerONNX = strings.Repeat("c", 64) },
		"trt":       func(k *Key) { k.TensorRT = "10.3.1" },
		"gpu":       func(k *Key) { k.GPU = "NVIDIA H100 80GB HBM3" },
		"cc":        func(k *Key) { k.ComputeCapability = "9.0" },
		"precision": func(k *Key) { k.Precision = FP32 },
		"typing":    func(k *Key) { k.Typing = Weak },
		"onnx":      func(k *Key) { k.ONNXPrecision = FP32 },
		"pins":      func(k *Key) { k.PinsONNX = strings.Repeat("d", 64) },
		"min":       func(k *Key) { k.Profile.Min = Size{32, 16} },
		"opt":       func(k *Key) { k.Profile.Opt = Size{384, 256} },
		"max":       func(k *Key) { k.Profile.Max = Size{512, 384} },
		"recipe":    func(k *Key) { k.Recipe++ },
	}
	n := reflect.TypeOf(Key{}).NumField() + 2 // Profile has three sizes
	if len(edits) != n {
		t.Fatalf("%d edits for %d key parts: cover new fields", len(edits), n)
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			k := base
			edit(&k)
			if k.ID() == id {
				t.Errorf("changing it keeps ID %s", id)
			}
		})
	}
}

func TestKeyValidate(t *testing.T) {
	if err := testKey().Validate(); err != nil {
		t.Fatal(err)
	}
	k := testKey()
	k.GPU, k.TensorRT = "", " "
	if err := k.Validate(); err == nil || !strings.Contains(err.Error(), "GPU name") || !strings.Contains(err.Error(), "TensorRT version") {
		t.Errorf("missing parts: %v", err)
	}
	k = testKey()
	k.Precision = "int8"
	if err := k.Validate(); err == nil {
		t.Error("int8 accepted")
	}
	// The typing and graph precision go together: a strongly typed FP16
	// engine from the float16 graph, a weakly typed one from the float32
	// graph with pins from the float16 graph, FP32 from the float32 graph.
	for _, c := range []struct {
		precision, typing, onnx, pins string
		ok                            bool
	}{
		{FP16, Strong, FP16, "", true},
		{FP16, Weak, FP32, "d", true},
		{FP32, Strong, FP32, "", true},
		{FP32, Weak, FP32, "", true},
		{FP16, Strong, FP32, "", false},
		{FP16, Weak, FP32, "", false},
		{FP16, Weak, FP16, "d", false},
		{FP32, Strong, FP16, "", false},
		{FP32, Weak, FP32, "d", false},
		{FP16, "", FP16, "", false},
	} {
		t.Run(fmt.Sprintf("%s,%s,onnx%s,pins%q", c.precision, c.typing, c.onnx, c.pins), func(t *testing.T) {
			k = testKey()
			k.Precision, k.Typing, k.ONNXPrecision, k.PinsONNX = c.precision, c.typing, c.onnx, c.pins
			if err := k.Validate(); (err == nil) != c.ok {
				t.Errorf("%+v: %v", c, err)
			}
		})
	}
	k = testKey()
	k.Profile.Min = Size{512, 512}
	if err := k.Validate(); err == nil || !strings.Contains(err.Error(), "min <= opt <= max") {
		t.Errorf("min > opt: %v", err)
	}
}

func TestSizesAndProfiles(t *testing.T) {
	for in, want := range map[string]Size{"384x256": {384, 256}, "384": {384, 384}, " 64X32 ": {64, 32}} {
		t.Run(fmt.Sprintf("%q", in), func(t *testing.T) {
			if got, err := ParseSize(in); err != nil || got != want {
				t.Errorf("ParseSize(%q) = %v, %v", in, got, err)
			}
		})
	}
	for _, bad := range []string{"", "x", "0x4", "-8x8", "8x", "axb"} {
		t.Run(fmt.Sprintf("bad %q", bad), func(t *testing.T) {
			if _, err := ParseSize(bad); err == nil {
				t.Errorf("ParseSize(%q) accepted", bad)
			}
		})
	}
	p, err := ProfileFor([]Size{{384, 384}, {256, 512}}, Size{16, 16})
	if err != nil || p != (Profile{Min: Size{16, 16}, Opt: Size{384, 384}, Max: Size{384, 512}}) {
		t.Errorf("ProfileFor = %v, %v", p, err)
	}
	if !p.Contains(Size{16, 512}) || p.Contains(Size{8, 8}) || p.Contains(Size{400, 16}) {
		t.Error("Contains")
	}
	if err := p.Validate(16); err != nil {
		t.Error(err)
	}
	if err := p.Validate(32); err == nil || !strings.Contains(err.Error(), "pad multiple 32") {
		t.Errorf("pad 32: %v", err)
	}
	if _, err := ProfileFor([]Size{{8, 8}}, Size{16, 16}); err == nil {
		t.Error("tile below minimum accepted")
	}
	if _, err := ProfileFor(nil, Size{16, 16}); err == nil {
		t.Error("no tiles accepted")
	}
}

// stageEngines makes a staged build folder with two engine files.
func stageEngines(t *testing.T, c Cache, prior, transformer string) string {
	t.Helper()
	dir, err := c.Stage()
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{PriorEngine: prior, TransformerEngine: transformer} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCacheCommitLookup(t *testing.T) {
	c := Cache{Dir: filepath.Join(t.TempDir(), "engines")}
	k := testKey()
	if _, err := c.Lookup(k); !errors.Is(err, ErrNotCached) {
		t.Fatalf("empty cache: %v", err)
	}
	built := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e, err := c.Commit(stageEngines(t, c, "PRIOR", "TRANSFORMER"), Sidecar{Key: k, BuiltAt: built, BuildSeconds: 93.5,
		HidiffdVersion: "v1.2.3", Model: "HI-Diff", Preset: "gopro"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Dir != c.EntryDir(k) {
		t.Errorf("entry in %s, want %s", e.Dir, c.EntryDir(k))
	}
	got, err := c.Lookup(k)
	if err != nil {
		t.Fatal(err)
	}
	sc := got.Sidecar
	if sc.Key != k || !sc.BuiltAt.Equal(built) || sc.BuildSeconds != 93.5 || sc.HidiffdVersion != "v1.2.3" ||
		sc.ID != k.ID() || sc.Engines[PriorEngine].Bytes != 5 || len(sc.Engines[TransformerEngine].SHA256) != 64 {
		t.Errorf("sidecar = %+v", sc)
	}
	// The sidecar is plain JSON with the whole key spelled out.
	raw, _ := os.ReadFile(filepath.Join(e.Dir, SidecarFile))
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"prior_onnx_sha256"`, `"tensorrt_version": "10.3.0"`, `"gpu": "Orin"`, `"compute_capability": "8.7"`,
		`"precision": "fp16"`, `"typing": "strong"`, `"onnx_precision": "fp16"`, `"built_at"`, `"hidiffd_version": "v1.2.3"`, `"build_seconds"`} {
		if !strings.Contains(string(raw), field) {
			t.Errorf("sidecar lacks %s:\n%s", field, raw)
		}
	}
	if b, err := got.ReadEngine(PriorEngine); err != nil || string(b) != "PRIOR" {
		t.Errorf("ReadEngine = %q, %v", b, err)
	}

	// Other keys miss.
	other := k
	other.GPU = "NVIDIA A2"
	if _, err := c.Lookup(other); !errors.Is(err, ErrNotCached) {
		t.Errorf("other GPU: %v", err)
	}
	// A recommit replaces the entry.
	if _, err := c.Commit(stageEngines(t, c, "PRIOR2", "TRANSFORMER2"), Sidecar{Key: k}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Lookup(k); err != nil || got.Sidecar.Engines[PriorEngine].Bytes != 6 {
		t.Errorf("after recommit: %+v, %v", got, err)
	}
}

func TestCacheRefusesInconsistentEntries(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	k := testKey()
	e, err := c.Commit(stageEngines(t, c, "PRIOR", "TRANSFORMER"), Sidecar{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := filepath.Join(e.Dir, SidecarFile)
	good, _ := os.ReadFile(sidecar)

	// A sidecar that names another key (hand-copied folder).
	var sc Sidecar
	json.Unmarshal(good, &sc)
	sc.Key.TensorRT = "8.6.2"
	b, _ := json.Marshal(sc)
	os.WriteFile(sidecar, b, 0o644)
	if _, err := c.Lookup(k); !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), "another key") {
		t.Errorf("foreign sidecar: %v", err)
	}
	// A torn sidecar.
	os.WriteFile(sidecar, good[:len(good)/2], 0o644)
	if _, err := c.Lookup(k); !errors.Is(err, ErrNotCached) {
		t.Errorf("torn sidecar: %v", err)
	}
	// A truncated engine.
	os.WriteFile(sidecar, good, 0o644)
	os.WriteFile(e.Path(TransformerEngine), []byte("TRANS"), 0o644)
	if _, err := c.Lookup(k); !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), "wrong size") {
		t.Errorf("truncated engine: %v", err)
	}
	// Same size, other content: Lookup passes, ReadEngine refuses.
	os.WriteFile(e.Path(TransformerEngine), []byte("TRANSFORMEX"), 0o644)
	got, err := c.Lookup(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.ReadEngine(TransformerEngine); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("changed engine: %v", err)
	}
	// Incomplete keys never reach the disk.
	bad := k
	bad.GPU = ""
	if _, err := c.Lookup(bad); err == nil || errors.Is(err, ErrNotCached) {
		t.Errorf("incomplete key: %v", err)
	}
	if _, err := c.Commit(stageEngines(t, c, "P", "T"), Sidecar{Key: bad}); err == nil {
		t.Error("committed an incomplete key")
	}
}

func TestCacheCleanAndTimingCache(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	stageEngines(t, c, "P", "T") // an interrupted build
	k := testKey()
	if _, err := c.Commit(stageEngines(t, c, "P", "T"), Sidecar{Key: k}); err != nil {
		t.Fatal(err)
	}
	if err := c.Clean(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(c.Dir)
	if len(ents) != 1 || ents[0].Name() != k.ID() {
		t.Errorf("after Clean: %v", ents)
	}
	if err := (Cache{Dir: filepath.Join(c.Dir, "absent")}).Clean(); err != nil {
		t.Errorf("Clean of a missing folder: %v", err)
	}

	orin := DeviceInfo{TensorRT: "8.6.2", GPU: "Orin (nvgpu)", ComputeCapability: "8.7"}
	h100 := DeviceInfo{TensorRT: "10.3.0", GPU: "NVIDIA H100 80GB HBM3", ComputeCapability: "9.0"}
	a, b := c.TimingCachePath(orin), c.TimingCachePath(h100)
	if a == b || filepath.Dir(a) != filepath.Join(c.Dir, "timing") || filepath.Base(a) != "trt8.6.2-Orin__nvgpu_-sm87.cache" {
		t.Errorf("timing caches %s, %s", a, b)
	}
}

func TestKeyForHashesTheONNXFiles(t *testing.T) {
	dir := writeTinyModel(t)
	m, err := model.Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := DeviceInfo{TensorRT: "10.3.0", GPU: "Orin", ComputeCapability: "8.7", TypingModes: CanWeak | CanStrong}
	p := Profile{Min: Size{8, 8}, Opt: Size{32, 32}, Max: Size{32, 32}}
	fp32, _ := SHA256File(filepath.Join(dir, "transformer.onnx"))
	fp16, _ := SHA256File(filepath.Join(dir, model.MixedFile))

	// Strongly typed FP16 hashes the float16 graph; FP32 the float32 one.
	k, err := KeyFor(m, d, FP16, p)
	if err != nil {
		t.Fatal(err)
	}
	if k.TransformerONNX != fp16 || k.Typing != Strong || k.ONNXPrecision != FP16 || k.PinsONNX != "" || k.PriorONNX == fp16 || k.Recipe != Recipe {
		t.Errorf("strong fp16 key = %+v", k)
	}
	if k32, err := KeyFor(m, d, FP32, p); err != nil || k32.TransformerONNX != fp32 || k32.ONNXPrecision != FP32 || k32.Typing != Strong {
		t.Errorf("strong fp32 key = %+v, %v", k32, err)
	}
	// Weakly typed (TensorRT 8.x) FP16 hashes the float32 graph, and the
	// float16 one that gives its pins.
	d8 := DeviceInfo{TensorRT: "8.6.2", GPU: "Orin", ComputeCapability: "8.7", TypingModes: CanWeak}
	if kw, err := KeyFor(m, d8, FP16, p); err != nil || kw.TransformerONNX != fp32 || kw.PinsONNX != fp16 || kw.Typing != Weak || kw.ONNXPrecision != FP32 {
		t.Errorf("weak fp16 key = %+v, %v", kw, err)
	}

	// Re-exporting the transformer (one byte differs) changes the key of
	// an FP32 engine, and makes the float16 graph stale: FP16 is refused
	// until it is rewritten.
	k32, _ := KeyFor(m, d, FP32, p)
	f, _ := os.OpenFile(m.TransformerPath, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{0x0a, 0x00}) // an empty, ignorable protobuf field
	f.Close()
	if k2, err := KeyFor(m, d, FP32, p); err != nil || k2.ID() == k32.ID() {
		t.Errorf("re-export kept the key: %v", err)
	}
	for _, dev := range []DeviceInfo{d, d8} {
		if _, err := KeyFor(m, dev, FP16, p); err == nil || !strings.Contains(err.Error(), "rewritten from another") ||
			!strings.Contains(err.Error(), "engine_build.precision mixed "+dir) {
			t.Errorf("stale float16 graph (%s): %v", TypingFor(dev), err)
		}
	}
	// No float16 graph: FP16 is refused with the fix, FP32 goes on.
	os.Remove(filepath.Join(dir, model.MixedFile))
	for _, dev := range []DeviceInfo{d, d8} {
		if _, err := KeyFor(m, dev, FP16, p); !errors.Is(err, model.ErrNoMixed) || !strings.Contains(err.Error(), "engine_build.precision mixed") {
			t.Errorf("no float16 graph (%s): %v", TypingFor(dev), err)
		}
	}
	if _, err := KeyFor(m, d, FP32, p); err != nil {
		t.Errorf("fp32 without a float16 graph: %v", err)
	}
}

func TestPlanSaysThePath(t *testing.T) {
	m, err := model.Inspect(writeTinyModel(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		modes     int
		precision string
		want      string
	}{
		{"strong only fp16", CanStrong, FP16, "strongly typed, transformer FP16 from transformer.fp16.onnx (float16, float32 islands: LayerNormalization 1"},
		{"weak and strong fp32", CanWeak | CanStrong, FP32, "strongly typed, transformer FP32 from transformer.onnx (TF32 off)"},
		{"weak only fp16", CanWeak, FP16, "weakly typed (TensorRT 8.x), transformer FP16 from transformer.onnx with the nodes that stay float32 in transformer.fp16.onnx pinned to FP32"},
		{"weak only fp32", CanWeak, FP32, "weakly typed, transformer FP32 from transformer.onnx"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := PlanFor(m, DeviceInfo{TensorRT: "x", TypingModes: c.modes}, c.precision)
			if err != nil || !strings.HasPrefix(p.String(), c.want) {
				t.Errorf("modes %d %s: %q, %v", c.modes, c.precision, p, err)
			}
		})
	}
	if _, err := PlanFor(m, DeviceInfo{}, "int8"); err == nil {
		t.Error("int8 planned")
	}
}
