package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"hidiffd/config"
	"hidiffd/model"
	"hidiffd/ort"
	"hidiffd/trt"
)

func init() {
	register(&Command{
		Name:    "doctor",
		Args:    "[--config FILE] [--model DIR]",
		Summary: "report which backends, libraries, GPUs and models this machine has, and why not",
		Run:     runDoctor,
	})
}

// doctorReport collects findings; a "problem" makes the exit status 1 and
// says what to do.
type doctorReport struct {
	w        io.Writer
	problems int
}

func (r *doctorReport) section(name string) { fmt.Fprintf(r.w, "\n%s\n", name) }
func (r *doctorReport) ok(format string, a ...any) {
	fmt.Fprintf(r.w, "  ok    "+format+"\n", a...)
}
func (r *doctorReport) info(format string, a ...any) {
	fmt.Fprintf(r.w, "  -     "+format+"\n", a...)
}
func (r *doctorReport) fail(format string, a ...any) {
	r.problems++
	fmt.Fprintf(r.w, "  FAIL  "+format+"\n", a...)
}

func runDoctor(ctx context.Context, args []string) int {
	fs := newFlagSet(commands["doctor"])
	cfgPath := fs.String("config", "", "configuration to check (default "+config.DefaultPath+" if it exists)")
	modelDir := fs.String("model", "", "model folder to check (default: model.dir from the config, else the shipped model)")
	if _, st := parseFlags(fs, args); st >= 0 {
		return st
	}
	r := &doctorReport{w: os.Stdout}
	fmt.Fprintf(r.w, "hidiffd %s (%s %s/%s, %d CPUs usable)\n", Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))

	// Configuration.
	r.section("configuration")
	cfg := config.Default()
	explicit := *cfgPath != ""
	if !explicit {
		if _, err := os.Stat(config.DefaultPath); err == nil {
			*cfgPath = config.DefaultPath
		}
	}
	if *cfgPath == "" {
		r.info("no --config and no %s: checking the built-in defaults", config.DefaultPath)
	} else if c, err := config.Load(*cfgPath); err != nil {
		r.fail("%s does not load:\n%s", *cfgPath, indent(err.Error(), "        "))
	} else {
		cfg = c
		r.ok("%s loads", *cfgPath)
	}

	// Backends.
	r.section("backends")
	lib := cfg.Backend.OnnxruntimeLibrary
	var libErr error
	if lib == "" {
		lib, libErr = ort.DefaultLibraryPath()
	} else if st, err := os.Stat(lib); err != nil {
		libErr = err
	} else if !st.Mode().IsRegular() {
		libErr = fmt.Errorf("%s is not a regular file", lib)
	}
	if libErr != nil {
		r.fail("onnxruntime: library not found: %v", libErr)
	} else {
		r.ok("onnxruntime: library %s", lib)
	}
	trtOK := doctorTensorRT(r, cfg)
	r.info("selected: backend.kind = %q -> %s", cfg.Backend.Kind, doctorSelected(cfg.Backend.Kind, trtOK, libErr == nil))

	// GPUs.
	r.section("GPUs")
	doctorGPU(r)
	doctorGPUMonitor(ctx, r, cfg)

	// Models.
	r.section("model")
	dir := *modelDir
	switch {
	case dir != "":
	case *cfgPath != "":
		dir = cfg.Model.Dir
	default:
		var tried []string
		if dir, tried = findModel(); dir == "" {
			r.fail("no shipped model found; looked in: %s", strings.Join(tried, ", "))
		}
	}
	if dir != "" {
		doctorModel(r, dir, lib, libErr == nil)
	}

	// Spool (only with a configuration: the default path may not be ours).
	if *cfgPath != "" {
		r.section("spool")
		doctorSpool(r, cfg.Spool.Root)
	}

	fmt.Fprintln(r.w)
	if r.problems > 0 {
		fmt.Fprintf(r.w, "%d problem(s) found.\n", r.problems)
		return 1
	}
	fmt.Fprintln(r.w, "no problems found.")
	return 0
}

func doctorGPU(r *doctorReport) {
	// Desktop / data-centre driver: device nodes and the kernel module's
	// version file. The readings (NVML, Jetson sysfs) follow in their own
	// section.
	nodes, _ := filepath.Glob("/dev/nvidia*")
	sort.Strings(nodes)
	if len(nodes) > 0 {
		r.ok("NVIDIA device nodes: %s", strings.Join(nodes, " "))
	} else {
		r.info("no /dev/nvidia* device nodes (no NVIDIA driver loaded, or not visible in this container)")
	}
	if line, err := firstLine("/proc/driver/nvidia/version"); err == nil {
		r.ok("driver: %s", line)
	} else {
		r.info("no /proc/driver/nvidia/version: %v", shortErr(err))
	}
	gpus, _ := filepath.Glob("/proc/driver/nvidia/gpus/*/information")
	for _, g := range gpus {
		if model := fieldFrom(g, "Model:"); model != "" {
			r.ok("GPU %s: %s", filepath.Base(filepath.Dir(g)), model)
		}
	}
	// Jetson (L4T): no NVML; the release file and the host1x/nvmap nodes.
	if line, err := firstLine("/etc/nv_tegra_release"); err == nil {
		r.ok("Jetson: %s", line)
		var jn []string
		for _, p := range []string{"/dev/nvmap", "/dev/nvhost-*", "/dev/dri/renderD*"} {
			m, _ := filepath.Glob(p)
			jn = append(jn, m...)
		}
		if len(jn) > 0 {
			r.ok("Jetson device nodes: %s", strings.Join(jn, " "))
		} else {
			r.info("Jetson: no /dev/nvmap, /dev/nvhost-* or /dev/dri/renderD* visible")
		}
	} else {
		r.info("not a Jetson (no /etc/nv_tegra_release)")
	}
}

func doctorModel(r *doctorReport, dir, lib string, libOK bool) {
	st, err := os.Stat(dir)
	if err != nil {
		r.fail("model.dir %s: %v", dir, shortErr(err))
		return
	}
	if !st.IsDir() {
		r.fail("model.dir %s: not a folder", dir)
		return
	}
	missing := false
	for _, f := range []string{model.PriorFile, model.TransformerFile} {
		p := filepath.Join(dir, f)
		fh, err := os.Open(p)
		if err != nil {
			r.fail("%s: %v", p, shortErr(err))
			missing = true
			continue
		}
		fi, _ := fh.Stat()
		fh.Close()
		r.ok("%s (%.1f MB, readable)", p, float64(fi.Size())/1e6)
	}
	if missing {
		return
	}
	doctorMixed(r, dir)
	if !libOK {
		r.info("metadata not read: ONNX Runtime is not available")
		return
	}
	// Opening loads both graphs: slow for a large model, but it is the only
	// way to be sure the files work with this library.
	b, err := ort.Open(dir, ort.Options{LibraryPath: lib, IntraOpThreads: 1})
	if err != nil {
		r.fail("model does not load: %v", err)
		return
	}
	defer b.Close()
	in := b.Info()
	r.ok("loads with ONNX Runtime %s", b.RuntimeVersion())
	r.info("model %s %s, preset %q, T=%d, pad multiple %d, prior %dx%d, trained on %q",
		in.Model, in.Version, in.Preset, in.Timesteps, in.PadMultiple, in.PriorTokens, in.PriorChannels, in.TrainingData)
	if in.WeightsSHA256 != "" {
		r.info("weights sha256 %s", in.WeightsSHA256)
	}
}

// doctorMixed reports the model's float16 graph (transformer.fp16.onnx),
// which only TensorRT FP16 engines need: present, and rewritten from the
// transformer.onnx beside it.
func doctorMixed(r *doctorReport, dir string) {
	m, err := model.Inspect(dir)
	if err != nil {
		return // the load below reports it
	}
	mx, err := model.InspectMixed(m)
	if err == nil {
		var sum string
		if sum, err = trt.SHA256File(m.TransformerPath); err == nil && sum != mx.SourceSHA256 {
			err = fmt.Errorf("%s was rewritten from another %s (the weights changed since); %s", mx.Path, model.TransformerFile, model.MixedFix(dir))
		}
	}
	if err != nil {
		r.info("TensorRT FP16 engines cannot be built from this folder: %v", err)
		return
	}
	fi, _ := os.Stat(mx.Path)
	r.ok("%s (%.1f MB): float16 with float32 islands (%s), rewritten from this %s; for TensorRT FP16 engines",
		mx.Path, float64(fi.Size())/1e6, mx.Islands, model.TransformerFile)
}

func doctorSpool(r *doctorReport, root string) {
	st, err := os.Stat(root)
	if errors.Is(err, fs.ErrNotExist) {
		r.info("%s does not exist yet (the daemon creates it at start)", root)
		return
	}
	if err != nil || !st.IsDir() {
		r.fail("spool.root %s: %v", root, func() any {
			if err != nil {
				return shortErr(err)
			}
			return "not a folder"
		}())
		return
	}
	for _, d := range []string{"inbox", "work", "out", "done", "failed"} {
		p := filepath.Join(root, d)
		if ents, err := os.ReadDir(p); err != nil {
			r.info("%s: %v", p, shortErr(err))
		} else {
			r.ok("%s: %d entries", p, len(ents))
		}
	}
}

func firstLine(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if s.Scan() {
		return strings.TrimSpace(s.Text()), nil
	}
	return "", errors.New("empty")
}

// fieldFrom returns the value after prefix on the first line that has it.
func fieldFrom(path, prefix string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// shortErr drops the path that os errors repeat, since the report names it.
func shortErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
