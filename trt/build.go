package trt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hidiffd/ort"
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

// KeyFor is the cache key of model m's engines on rt's device.
func KeyFor(m *ort.Model, d DeviceInfo, precision string, p Profile) (Key, error) {
	k := Key{TensorRT: d.TensorRT, GPU: d.GPU, ComputeCapability: d.ComputeCapability,
		Precision: precision, Profile: p, Recipe: Recipe}
	var err error
	if k.PriorONNX, err = SHA256File(m.PriorPath); err != nil {
		return Key{}, err
	}
	if k.TransformerONNX, err = SHA256File(m.TransformerPath); err != nil {
		return Key{}, err
	}
	return k, k.Validate()
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

// Build parses model m's two ONNX files with TensorRT's ONNX parser and
// writes a new cache entry: the prior in FP32 (it is tiny, and its first
// diffusion step multiplies by ~174), the transformer in s.Precision with
// the FP16 hazards pinned to FP32 (recipe.go). The timing cache in the
// cache folder is read and updated. rt must have been opened with
// Options.Builder. It takes minutes; the entry appears atomically at the
// end, so an interrupted build leaves nothing but a ".build-*" folder.
func Build(rt *Runtime, c Cache, m *ort.Model, s BuildSpec) (*Entry, error) {
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
	key, err := KeyFor(m, rt.Device(), s.Precision, s.Profile)
	if err != nil {
		return nil, err
	}
	nodes := map[string][]ort.Node{}
	for _, path := range []string{m.PriorPath, m.TransformerPath} {
		if nodes[path], err = ort.ReadNodes(path); err != nil {
			return nil, err
		}
		if err := CheckParsable(rt.Device().TensorRT, path, nodes[path]); err != nil {
			return nil, err
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

	say("building %s from %s: FP32, profile %s", PriorEngine, m.PriorPath, s.Profile)
	t := time.Now()
	res, err := rt.build(buildSpec{
		onnx: m.PriorPath, engine: filepath.Join(staged, PriorEngine), timingCache: tc,
		inputs:         []InputProfile{imageProfile(s.Profile), fixedProfile(ort.PriorIO.Inputs[1], 1, tok, ch)},
		workspaceBytes: uint64(s.WorkspaceBytes),
	})
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", PriorEngine, err)
	}
	sc.Builds[PriorEngine] = res
	say("built %s in %s (%d layers, %.1f MB)", PriorEngine, time.Since(t).Round(time.Second), res.Layers, float64(res.EngineBytes)/1e6)

	var names []string
	if s.Precision == FP16 {
		var l2, ln int
		names, l2, ln = FP32Nodes(nodes[m.TransformerPath])
		say("FP16 with FP32 pins: %d L2 normalisations and %d decomposed layer norms found, %d node and tensor names pinned, plus every LayerNormalization and Softmax layer",
			l2, ln, len(names))
	}
	say("building %s from %s: %s, profile %s (this takes minutes)", TransformerEngine, m.TransformerPath, strings.ToUpper(s.Precision), s.Profile)
	t = time.Now()
	res, err = rt.build(buildSpec{
		onnx: m.TransformerPath, engine: filepath.Join(staged, TransformerEngine), timingCache: tc,
		fp16:           s.Precision == FP16,
		inputs:         []InputProfile{imageProfile(s.Profile), fixedProfile(ort.TransformerIO.Inputs[1], 1, tok, ch)},
		workspaceBytes: uint64(s.WorkspaceBytes),
		fp32Names:      strings.Join(names, "\n"),
	})
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", TransformerEngine, err)
	}
	sc.Builds[TransformerEngine] = res
	say("built %s in %s (%d layers, %d pinned to FP32, %.1f MB)", TransformerEngine, time.Since(t).Round(time.Second),
		res.Layers, res.PinnedFP32, float64(res.EngineBytes)/1e6)
	if s.Precision == FP16 && res.PinnedFP32 == 0 {
		return nil, errors.New("FP16 build pinned no layer to FP32: the graph lacks LayerNormalization/Softmax/ReduceL2 layers the recipe expects; refusing an engine that may overflow (build with --precision fp32)")
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

// Load opens the runtime, finds the entry for model m, precision and
// profile in the cache and loads it. Errors: ErrNotBuilt, the runtime's
// (no library, no GPU), ErrNotCached (nothing built yet), or, for an entry
// that exists but does not load, StatusDeserialize / ErrEngineMismatch;
// NeedsBuild tells the last three apart from the first ones. The key is
// returned whenever the runtime opened, so the caller can invalidate it.
func Load(m *ort.Model, c Cache, precision string, p Profile, opts Options) (*Backend, Key, error) {
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
