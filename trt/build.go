package trt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hidiffd/model"
)

// BuildSpec says what to build.
type BuildSpec struct {
	Precision      string  // FP16 or FP32 (the transformer's; the prior is always FP32)
	Profile        Profile // image sizes the engines accept
	WorkspaceBytes int64   // 0: TensorRT's default
	HidiffdVersion string  // recorded in the sidecar
	// Log receives progress lines ("building prior.engine ...").
	Log func(msg string)
}

// Plan is how model m's engines are built on a device for a precision: the
// typing mode, the transformer graph the engine is built from, and, for
// FP16, the float16 graph (built from when strongly typed, the source of
// the FP32 pins when weakly typed).
type Plan struct {
	Precision     string // of the transformer engine; the prior is always FP32
	Typing        string // Weak or Strong
	Transformer   string // path of the graph the transformer engine is built from
	ONNXPrecision string // that graph's: FP16 (the float16 export) or FP32
	Mixed         *model.Mixed
}

// PlanFor decides the plan for model m on device d: strongly typed on
// TensorRT 10 and later, where FP16 means the float16 export
// (transformer.fp16.onnx); weakly typed on 8.x, FP16 from transformer.onnx
// with the FP32 pins read from the float16 export's types. FP16 without a
// float16 export is refused, with the command that writes one.
func PlanFor(m *model.Model, d DeviceInfo, precision string) (Plan, error) {
	p := Plan{Precision: precision, Typing: TypingFor(d), Transformer: m.TransformerPath, ONNXPrecision: FP32}
	switch precision {
	case FP32:
		return p, nil
	case FP16:
	default:
		return p, fmt.Errorf("precision %q: want %q or %q", precision, FP16, FP32)
	}
	mixed, err := model.InspectMixed(m)
	if err != nil {
		return p, fmt.Errorf("FP16 engines (TensorRT %s, %s) need the model's float16 graph: %w", d.TensorRT, p.Typing+"ly typed", err)
	}
	p.Mixed = mixed
	if p.Typing == Strong {
		p.Transformer, p.ONNXPrecision = mixed.Path, FP16
	}
	return p, nil
}

// String says the plan in a line, for build-engine, doctor and logs.
func (p Plan) String() string {
	file := filepath.Base(p.Transformer)
	switch {
	case p.Precision == FP32:
		return fmt.Sprintf("%sly typed, transformer FP32 from %s (TF32 off)", p.Typing, file)
	case p.Typing == Strong:
		return fmt.Sprintf("strongly typed, transformer FP16 from %s (float16, float32 islands: %s)", file, p.Mixed.Islands)
	}
	return fmt.Sprintf("weakly typed (TensorRT 8.x), transformer FP16 from %s with the nodes that stay float32 in %s pinned to FP32",
		file, filepath.Base(p.Mixed.Path))
}

// KeyFor is the cache key of model m's engines on rt's device: the plan's
// graphs hashed. A float16 graph rewritten from another transformer.onnx
// (the weights changed since) is refused here, with the fix.
func KeyFor(m *model.Model, d DeviceInfo, precision string, p Profile) (Key, error) {
	_, k, err := planKey(m, d, precision, p)
	return k, err
}

func planKey(m *model.Model, d DeviceInfo, precision string, p Profile) (Plan, Key, error) {
	plan, err := PlanFor(m, d, precision)
	if err != nil {
		return plan, Key{}, err
	}
	k := Key{TensorRT: d.TensorRT, GPU: d.GPU, ComputeCapability: d.ComputeCapability,
		Precision: precision, Typing: plan.Typing, ONNXPrecision: plan.ONNXPrecision, Profile: p, Recipe: Recipe}
	if k.PriorONNX, err = SHA256File(m.PriorPath); err != nil {
		return plan, Key{}, err
	}
	if k.TransformerONNX, err = SHA256File(plan.Transformer); err != nil {
		return plan, Key{}, err
	}
	if plan.Mixed != nil {
		source := k.TransformerONNX
		if plan.Typing == Strong {
			if source, err = SHA256File(m.TransformerPath); err != nil {
				return plan, Key{}, err
			}
		} else if k.PinsONNX, err = SHA256File(plan.Mixed.Path); err != nil {
			return plan, Key{}, err
		}
		if plan.Mixed.SourceSHA256 != source {
			return plan, Key{}, fmt.Errorf("%s was rewritten from another %s (sha256 %.12s, this one is %.12s): it would run other weights; %s",
				plan.Mixed.Path, m.TransformerPath, plan.Mixed.SourceSHA256, source, model.MixedFix(m.Dir))
		}
	}
	return plan, k, k.Validate()
}

// imageProfile is the blur input's profile: [1, 3, H, W] over p.
func imageProfile(p Profile) InputProfile {
	return InputProfile{Name: "blur",
		Min: []int64{1, 3, int64(p.Min.H), int64(p.Min.W)},
		Opt: []int64{1, 3, int64(p.Opt.H), int64(p.Opt.W)},
		Max: []int64{1, 3, int64(p.Max.H), int64(p.Max.W)},
	}
}

func fixedProfile(name string, dims ...int64) InputProfile {
	return InputProfile{Name: name, Min: dims, Opt: dims, Max: dims}
}

// Build parses model m's ONNX files with TensorRT's ONNX parser and writes
// a new cache entry following PlanFor: the prior in FP32 (it is tiny, and
// its first diffusion step multiplies by ~174), the transformer in
// s.Precision, from the float16 export when strongly typed, or with the
// float16 export's float32 nodes pinned to FP32 when weakly typed (see
// recipe.go). The timing cache in the cache folder is read and updated. rt
// must have been opened with Options.Builder. It takes minutes; the entry
// appears atomically at the end, so an interrupted build leaves nothing but
// a ".build-*" folder.
func Build(rt *Runtime, c Cache, m *model.Model, s BuildSpec) (*Entry, error) {
	say := func(format string, a ...any) {
		if s.Log != nil {
			s.Log(fmt.Sprintf(format, a...))
		}
	}
	if s.Precision == "" {
		s.Precision = FP16
	}
	if err := s.Profile.Validate(m.Info.PadMultiple); err != nil {
		return nil, err
	}
	plan, key, err := planKey(m, rt.Device(), s.Precision, s.Profile)
	if err != nil {
		return nil, err
	}
	nodes := map[string][]model.Node{}
	for _, path := range []string{m.PriorPath, plan.Transformer} {
		if nodes[path], err = model.ReadNodes(path); err != nil {
			return nil, err
		}
		if err := CheckParsable(rt.Device().TensorRT, path, nodes[path]); err != nil {
			return nil, err
		}
	}
	var pins []string
	if plan.Mixed != nil {
		mixedNodes := nodes[plan.Mixed.Path]
		if mixedNodes == nil {
			if mixedNodes, err = model.ReadNodes(plan.Mixed.Path); err != nil {
				return nil, err
			}
		}
		types, err := model.ReadTypes(plan.Mixed.Path)
		if err != nil {
			return nil, err
		}
		counts, err := CountMixed(plan.Mixed.Path, mixedNodes, types)
		if err != nil {
			return nil, err
		}
		say("%s: %d nodes compute in float16, %d in float32 (%s)", plan.Mixed.Path, counts.FP16, counts.FP32, plan.Mixed.Islands)
		if plan.Typing == Weak {
			var n int
			pins, n = FP32Pins(nodes[plan.Transformer], mixedNodes, types)
			say("FP16 with FP32 pins: the %d nodes that compute in float32 in %s (%d node and tensor names), plus every LayerNormalization and Softmax layer",
				n, filepath.Base(plan.Mixed.Path), len(pins))
			if n == 0 {
				return nil, fmt.Errorf("%s: none of the nodes that compute in float32 in %s is in it: the two graphs do not come from one export; %s",
					plan.Transformer, plan.Mixed.Path, model.MixedFix(m.Dir))
			}
		}
	}
	staged, err := c.Stage()
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(staged)
		}
	}()
	tc := c.TimingCachePath(rt.Device())
	if err := os.MkdirAll(filepath.Dir(tc), 0o755); err != nil {
		return nil, fmt.Errorf("timing cache: %w", err)
	}
	t0 := time.Now()
	tok, ch := int64(m.Info.PriorTokens), int64(m.Info.PriorChannels)
	sc := Sidecar{Key: key, HidiffdVersion: s.HidiffdVersion, Model: m.Info.Model, Preset: m.Info.Preset,
		Workspace: s.WorkspaceBytes, Builds: map[string]BuildResult{}}

	say("engines: %s", plan)
	say("building %s from %s: FP32, %sly typed, profile %s", PriorEngine, m.PriorPath, plan.Typing, s.Profile)
	t := time.Now()
	res, err := rt.build(buildSpec{
		onnx: m.PriorPath, engine: filepath.Join(staged, PriorEngine), timingCache: tc, typing: plan.Typing,
		inputs:         []InputProfile{imageProfile(s.Profile), fixedProfile(model.PriorIO.Inputs[1], 1, tok, ch)},
		workspaceBytes: uint64(s.WorkspaceBytes),
	})
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", PriorEngine, err)
	}
	sc.Builds[PriorEngine] = res
	say("built %s in %s (%d layers, %.1f MB)", PriorEngine, time.Since(t).Round(time.Second), res.Layers, float64(res.EngineBytes)/1e6)

	say("building %s from %s: %s, %sly typed, profile %s (this takes minutes)", TransformerEngine, plan.Transformer,
		strings.ToUpper(s.Precision), plan.Typing, s.Profile)
	t = time.Now()
	res, err = rt.build(buildSpec{
		onnx: plan.Transformer, engine: filepath.Join(staged, TransformerEngine), timingCache: tc, typing: plan.Typing,
		fp16:           s.Precision == FP16,
		inputs:         []InputProfile{imageProfile(s.Profile), fixedProfile(model.TransformerIO.Inputs[1], 1, tok, ch)},
		workspaceBytes: uint64(s.WorkspaceBytes),
		fp32Names:      strings.Join(pins, "\n"),
	})
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", TransformerEngine, err)
	}
	sc.Builds[TransformerEngine] = res
	if plan.Typing == Strong {
		say("built %s in %s (%d layers: %d float16, %d float32, %.1f MB)", TransformerEngine, time.Since(t).Round(time.Second),
			res.Layers, res.FP16Layers, res.FP32Layers, float64(res.EngineBytes)/1e6)
	} else {
		say("built %s in %s (%d layers, %d pinned to FP32, %.1f MB)", TransformerEngine, time.Since(t).Round(time.Second),
			res.Layers, res.PinnedFP32, float64(res.EngineBytes)/1e6)
	}
	if err := checkBuilt(plan, res); err != nil {
		return nil, err
	}

	sc.BuiltAt = time.Now().UTC()
	sc.BuildSeconds = time.Since(t0).Seconds()
	e, err := c.Commit(staged, sc)
	if err != nil {
		return nil, err
	}
	ok = true
	say("engine cache entry %s", e.Dir)
	return e, nil
}

// checkBuilt refuses a transformer engine whose network does not have the
// precision the plan meant: an FP16 engine without FP32 layers may overflow,
// an FP32 one must have no float16 layer.
func checkBuilt(p Plan, res BuildResult) error {
	switch {
	case p.Precision == FP16 && p.Typing == Weak && res.PinnedFP32 == 0:
		return errors.New("FP16 build pinned no layer to FP32: the graph lacks the layers the float16 export keeps in float32; refusing an engine that may overflow (build with --precision fp32)")
	case p.Precision == FP16 && p.Typing == Strong && (res.FP16Layers == 0 || res.FP32Layers == 0):
		return fmt.Errorf("the strongly typed network of %s has %d float16 and %d float32 layers: not float16 with float32 islands; refusing it (build with --precision fp32)",
			p.Transformer, res.FP16Layers, res.FP32Layers)
	case p.Precision == FP32 && p.Typing == Strong && res.FP16Layers != 0:
		return fmt.Errorf("the FP32 network of %s has %d float16 layers: not a float32 graph", p.Transformer, res.FP16Layers)
	}
	return nil
}

// Load opens the runtime, finds the entry for model m, precision and
// profile in the cache and loads it. Errors: ErrNotBuilt, the runtime's
// (no library, no GPU), ErrNotCached (nothing built yet), or, for an entry
// that exists but does not load, StatusDeserialize / ErrEngineMismatch;
// NeedsBuild tells the last three apart from the first ones. The key is
// returned whenever the runtime opened, so the caller can invalidate it.
func Load(m *model.Model, c Cache, precision string, p Profile, opts Options) (*Backend, Key, error) {
	rt, err := OpenRuntime(opts)
	if err != nil {
		return nil, Key{}, err
	}
	key, err := KeyFor(m, rt.Device(), precision, p)
	if err != nil {
		rt.Close()
		return nil, Key{}, err
	}
	e, err := c.Lookup(key)
	if err != nil {
		rt.Close()
		return nil, key, err
	}
	b, err := OpenEntry(rt, m, e, p)
	if err != nil {
		rt.Close()
		return nil, key, err
	}
	return b, key, nil
}

// NeedsBuild reports whether err from Load means "build (again)": no entry,
// or an entry TensorRT or the contract check refused.
func NeedsBuild(err error) bool {
	return errors.Is(err, ErrNotCached) || errors.Is(err, ErrEngineMismatch) || StatusOf(err) == StatusDeserialize
}
