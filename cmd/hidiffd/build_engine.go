package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"hidiffd/config"
	"hidiffd/model"
	"hidiffd/trt"
)

func init() {
	register(&Command{
		Name: "build-engine",
		Args: "[--config FILE] [--model DIR] [--engine-dir DIR] [--precision fp16|fp32] [--workspace MiB] [--tile HxW]... [--min HxW] [--device N] [--force]",
		Summary: "build the TensorRT engines of a model for this GPU into the engine cache " +
			"(the daemon runs it by itself when none matches)",
		Run: runBuildEngine,
	})
}

// tileList is a repeatable --tile flag.
type tileList []trt.Size

func (l *tileList) String() string {
	parts := make([]string, len(*l))
	for i, s := range *l {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

func (l *tileList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		s, err := trt.ParseSize(part)
		if err != nil {
			return err
		}
		*l = append(*l, s)
	}
	return nil
}

// buildResult is the one JSON line build-engine prints on stdout.
type buildResult struct {
	Entry    string  `json:"entry"`
	ID       string  `json:"id"`
	Built    bool    `json:"built"` // false: a matching entry existed (no --force)
	Seconds  float64 `json:"seconds"`
	TensorRT string  `json:"tensorrt"`
	GPU      string  `json:"gpu"`
	Profile  string  `json:"profile"`
	// Typing is the network typing mode ("strong" on TensorRT 10 and
	// later, "weak" on 8.x) and ONNX the transformer graph built from.
	Typing string `json:"typing"`
	ONNX   string `json:"transformer_onnx"`
}

// runBuildEngine builds both engines. Progress goes to stderr, one line
// each (the daemon, which runs this as a child process, logs every line
// and extends its start timeout while they come); the result is one JSON
// line on stdout. Flags win over the configuration; without --config the
// built-in defaults (and the shipped model) apply.
func runBuildEngine(ctx context.Context, args []string) int {
	fs := newFlagSet(commands["build-engine"])
	cfgPath := fs.String("config", "", "configuration to take model.dir, model.tile, backend.* and gpu.device from")
	modelDir := fs.String("model", "", "model folder with prior.onnx and transformer.onnx (default: model.dir, else the shipped model)")
	engineDir := fs.String("engine-dir", "", "engine cache folder (default: backend.engine_dir)")
	precision := fs.String("precision", "", "transformer precision, fp16 or fp32 (default: backend.precision); the prior is always FP32")
	workspace := fs.Int("workspace", -1, "builder workspace limit in MiB, 0 = TensorRT's default (default: backend.workspace_mib)")
	var tiles tileList
	fs.Var(&tiles, "tile", "tile size HxW the engines are tuned for; repeat for more sizes: the profile spans the largest (default: model.tile)")
	minSize := fs.String("min", "", "smallest H x W the engines accept (default: the model's pad multiple, for frames smaller than a tile)")
	device := fs.Int("device", -1, "CUDA device (default: gpu.device)")
	nvinfer := fs.String("nvinfer", "", "libnvinfer to load (default: backend.tensorrt_library)")
	force := fs.Bool("force", false, "build even if a matching engine is cached")
	verbose := fs.Bool("verbose", false, "show TensorRT's informational messages too")
	if rest, st := parseFlags(fs, args); st >= 0 {
		return st
	} else if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "hidiffd build-engine: unexpected argument %q\n", rest[0])
		return 2
	}
	say := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "build-engine: "+format+"\n", a...) }
	fail := func(format string, a ...any) int {
		say("error: "+format, a...)
		return 1
	}

	cfg := config.Default()
	if *cfgPath != "" {
		c, err := config.Load(*cfgPath)
		if err != nil {
			return fail("configuration refused:\n%v", err)
		}
		cfg = c
	}
	if *modelDir == "" {
		if *cfgPath != "" {
			*modelDir = cfg.Model.Dir
		} else if dir, tried := findModel(); dir != "" {
			*modelDir = dir
		} else {
			return fail("no --model and no shipped model; looked in: %s", strings.Join(tried, ", "))
		}
	}
	if *engineDir == "" {
		*engineDir = cfg.Backend.EngineDir
	}
	if *precision == "" {
		*precision = cfg.Backend.Precision
	}
	if *precision != trt.FP16 && *precision != trt.FP32 {
		say("--precision %q: want fp16 or fp32", *precision)
		return 2
	}
	if *workspace < 0 {
		*workspace = cfg.Backend.WorkspaceMiB
	}
	if *device < 0 {
		*device = cfg.GPU.Device
	}
	if *nvinfer == "" {
		*nvinfer = cfg.Backend.TensorRTLibrary
	}

	m, err := model.Inspect(*modelDir)
	if err != nil {
		return fail("%v", err)
	}
	if len(tiles) == 0 {
		if cfg.Model.Tile == 0 {
			return fail("model.tile is 0 (whole frames): TensorRT engines need a bounded size; give --tile HxW")
		}
		tiles = tileList{{H: cfg.Model.Tile, W: cfg.Model.Tile}}
	}
	least := trt.Size{H: m.Info.PadMultiple, W: m.Info.PadMultiple}
	if *minSize != "" {
		if least, err = trt.ParseSize(*minSize); err != nil {
			say("--min: %v", err)
			return 2
		}
	}
	profile, err := trt.ProfileFor(tiles, least)
	if err == nil {
		err = profile.Validate(m.Info.PadMultiple)
	}
	if err != nil {
		return fail("%v", err)
	}

	rt, err := trt.OpenRuntime(trt.Options{
		NvinferLibrary: *nvinfer,
		Device:         *device,
		Builder:        true,
		Verbose:        *verbose,
		Progress:       os.Stderr, // TensorRT's own lines, as they come
	})
	if err != nil {
		return fail("%v", err)
	}
	defer rt.Close()
	d := rt.Device()
	say("TensorRT %s (%s), %s, compute capability %s, CUDA driver %s", d.TensorRT, d.NvinferPath, d.GPU, d.ComputeCapability, d.CUDADriver)
	plan, err := trt.PlanFor(m, d, *precision)
	if err != nil {
		return fail("%v", err)
	}
	say("engines: %s", plan)

	c := trt.Cache{Dir: *engineDir}
	if err := c.Clean(); err != nil {
		say("warning: cleaning %s: %v", *engineDir, err)
	}
	key, err := trt.KeyFor(m, d, *precision, profile)
	if err != nil {
		return fail("%v", err)
	}
	res := buildResult{TensorRT: d.TensorRT, GPU: d.GPU, Profile: profile.String(), ID: key.ID(), Typing: plan.Typing, ONNX: plan.Transformer}
	if e, err := c.Lookup(key); err == nil && !*force {
		say("a matching engine is cached already: %s (--force rebuilds it)", e.Dir)
		res.Entry = e.Dir
		return printJSON(res)
	}
	t0 := time.Now()
	e, err := trt.Build(rt, c, m, trt.BuildSpec{
		Precision:      *precision,
		Profile:        profile,
		WorkspaceBytes: int64(*workspace) << 20,
		HidiffdVersion: Version(),
		Log:            func(msg string) { say("%s", msg) },
	})
	if err != nil {
		return fail("%v", err)
	}
	res.Entry, res.Built, res.Seconds = e.Dir, true, time.Since(t0).Seconds()
	return printJSON(res)
}

func printJSON(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(string(b))
	return 0
}

// doctorTensorRT reports whether TensorRT is built in and usable, and what
// the engine cache holds; it returns whether a TensorRT runtime opened.
func doctorTensorRT(r *doctorReport, cfg *config.Config) bool {
	if err := trt.Available(); err != nil {
		r.info("tensorrt: not built in (rebuild with `go build -tags tensorrt`); backend.kind = \"tensorrt\" is refused at start")
		return false
	}
	rt, err := trt.OpenRuntime(trt.Options{NvinferLibrary: cfg.Backend.TensorRTLibrary, Device: cfg.GPU.Device})
	if err != nil {
		if cfg.Backend.Kind == "tensorrt" {
			r.fail("tensorrt: %v", err)
		} else {
			r.info("tensorrt: built in, not usable here: %v", err)
		}
		return false
	}
	d := rt.Device()
	rt.Close()
	r.ok("tensorrt: TensorRT %s (%s; headers %s), %s, compute capability %s, CUDA driver %s%s",
		d.TensorRT, d.NvinferPath, d.TensorRTHeaders, d.GPU, d.ComputeCapability, d.CUDADriver,
		map[bool]string{true: ", integrated (zero-copy I/O)", false: ""}[d.ZeroCopy])
	doctorEnginePlan(r, cfg, d)
	sidecars, _ := filepath.Glob(filepath.Join(cfg.Backend.EngineDir, "*", trt.SidecarFile))
	sort.Strings(sidecars)
	if len(sidecars) == 0 {
		r.info("engine cache %s: empty (`hidiffd build-engine`, or the daemon builds at start: backend.on_missing_engine = %q)",
			cfg.Backend.EngineDir, cfg.Backend.OnMissingEngine)
	}
	for _, p := range sidecars {
		var sc trt.Sidecar
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &sc)
		}
		if err != nil {
			r.info("engine %s: unreadable sidecar: %v", filepath.Dir(p), err)
			continue
		}
		here := sc.Key.TensorRT == d.TensorRT && sc.Key.GPU == d.GPU && sc.Key.ComputeCapability == d.ComputeCapability
		how := fmt.Sprintf("%sly typed, from a %s graph", sc.Key.Typing, sc.Key.ONNXPrecision)
		if sc.Key.Recipe != trt.Recipe {
			how, here = fmt.Sprintf("builder recipe %d", sc.Key.Recipe), false
		}
		r.info("engine %s: %s %s (%s), %s, profile %s, TensorRT %s on %s, built %s by hidiffd %s%s",
			filepath.Base(filepath.Dir(p)), sc.Preset, sc.Key.Precision, how, sc.Model, sc.Key.Profile, sc.Key.TensorRT, sc.Key.GPU,
			sc.BuiltAt.Format(time.RFC3339), sc.HidiffdVersion,
			map[bool]string{true: "", false: " (for another GPU, TensorRT or builder recipe: unused here)"}[here])
	}
	return true
}

// doctorEnginePlan says which path engines take on this machine for the
// configured model and precision (typing mode, graph, pins), and whether
// the model's float16 graph is usable for it.
func doctorEnginePlan(r *doctorReport, cfg *config.Config, d trt.DeviceInfo) {
	m, err := model.Inspect(cfg.Model.Dir)
	if err != nil {
		return // the model check reports it
	}
	p := trt.Profile{Min: trt.Size{H: 8, W: 8}, Opt: trt.Size{H: 8, W: 8}, Max: trt.Size{H: 8, W: 8}}
	plan, err := trt.PlanFor(m, d, cfg.Backend.Precision)
	if err == nil {
		_, err = trt.KeyFor(m, d, cfg.Backend.Precision, p) // the float16 graph's source check
	}
	if err != nil {
		if cfg.Backend.Kind == "tensorrt" {
			r.fail("tensorrt engines (backend.precision = %q): %v", cfg.Backend.Precision, err)
		} else {
			r.info("tensorrt engines (backend.precision = %q) cannot be built: %v", cfg.Backend.Precision, err)
		}
		return
	}
	r.ok("tensorrt engines (backend.precision = %q): %s", cfg.Backend.Precision, plan)
}

// doctorSelected says what backend.kind resolves to on this machine.
func doctorSelected(kind string, trtOK, ortOK bool) string {
	switch {
	case kind == "tensorrt" && trtOK, kind == "auto" && trtOK:
		return "tensorrt (if an engine is cached or can be built; else see backend.on_missing_engine)"
	case kind == "tensorrt":
		return "none usable (TensorRT is not)"
	case ortOK:
		return "onnxruntime"
	}
	return "none usable"
}
