package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"hidiffd/backend"
	"hidiffd/config"
	"hidiffd/daemon"
	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/internal/durable"
	"hidiffd/logging"
	"hidiffd/trt"
)

func init() {
	register(&Command{
		Name:    "deblur",
		Args:    "[--model DIR] [--backend onnxruntime|tensorrt|auto] [--out DIR] [--tile N] [--seed N] FILE|DIR...",
		Summary: "deblur images once (files, or the JPEG/PNG files in folders) and write them under --out",
		Run:     runDeblur,
	})
}

func runDeblur(ctx context.Context, args []string) int {
	def := config.Default()
	fs := newFlagSet(commands["deblur"])
	mf := addModelFlags(fs)
	outDir := fs.String("out", "deblurred", "folder for the results; each keeps its input's file name")
	quality := fs.Int("quality", def.Output.JPEGQuality, "JPEG quality of JPEG outputs (1..100)")
	of := addOutputFlags(fs)
	inputs, st := parseFlags(fs, args)
	if st >= 0 {
		return st
	}
	if len(inputs) == 0 {
		fmt.Fprintln(os.Stderr, "hidiffd deblur: name at least one image file or folder")
		fs.Usage()
		return 2
	}
	if *quality < 1 || *quality > 100 {
		fmt.Fprintln(os.Stderr, "hidiffd deblur: --quality must be between 1 and 100")
		return 2
	}
	if err := mf.check(); err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: %v\n", err)
		return 2
	}

	files, missing := collectInputs(inputs)
	if len(files) == 0 {
		for _, m := range missing {
			fmt.Fprintf(os.Stderr, "hidiffd deblur: %v\n", m)
		}
		fmt.Fprintln(os.Stderr, "hidiffd deblur: no JPEG or PNG files found")
		return 1
	}
	if err := mf.resolveModel(); err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: --out: %v\n", err)
		return 1
	}
	guard, err := newOutputGuard(*outDir, files)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: --out: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	tty := term.IsTerminal(int(os.Stdout.Fd()))
	log, _ := logging.New(os.Stderr, "info", "auto")
	if !tty {
		log, _ = logging.New(os.Stdout, "info", "json")
	}

	b, pipe, err := mf.open(ctx, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: %v\n", err)
		return 1
	}
	defer b.Close()

	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions(len(files),
			progressbar.OptionSetWriter(os.Stdout),
			progressbar.OptionSetDescription("deblurring"),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionClearOnFinish(),
		)
	}

	failed := 0
	for _, m := range missing {
		reportFailure(bar, log, m.path, m.err)
		failed++
	}
	for _, in := range files {
		if ctx.Err() != nil {
			break
		}
		name := filepath.Base(in)
		dst, err := guard.claim(in)
		if err != nil {
			reportFailure(bar, log, in, err)
			failed++
			continue
		}
		if bar != nil {
			bar.Describe(name)
		}
		r, err := deblurOne(ctx, pipe, in, dst,
			mf.limits(), imageio.EncodeOptions{Quality: *quality}, *of.keepMeta)
		for _, what := range r.dropped {
			if bar != nil {
				bar.Clear()
				fmt.Fprintf(os.Stderr, "%s: not carried into the result: %s\n", in, what)
			} else {
				log.Warn().Str("name", name).Str("path", in).Str("dropped", what).Msg("part of the image is not carried into the result")
			}
		}
		if err == nil {
			err = of.finish(log, r)
		}
		if err != nil {
			reportFailure(bar, log, in, err)
			failed++
		} else if bar == nil {
			log.Info().Str("name", name).Str("out", r.out).Int("width", r.w).Int("height", r.h).
				Str("backend", b.Name()).Int("tiles", r.st.Tiles).
				Float64("decode_ms", msf(r.decode)).Float64("prior_ms", msf(r.st.Prior)).
				Float64("transformer_ms", msf(r.st.Transform)).Float64("encode_ms", msf(r.encode)).
				Float64("total_ms", msf(r.total)).Dict("provenance", daemon.ProvenanceDict(r.prov)).Msg("deblurred")
		}
		if bar != nil {
			bar.Add(1)
		}
	}
	if bar != nil {
		bar.Finish()
	}
	done := len(files) + len(missing) - failed
	if ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: interrupted\n")
		return 130
	}
	if tty {
		fmt.Printf("%d of %d images written to %s\n", done, len(files)+len(missing), *outDir)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// modelFlags are the model and backend flags the one-shot commands share
// (deblur, eval), so that eval measures exactly what deblur writes: same
// model default, backend, tiling, seed and limits.
type modelFlags struct {
	model     *string
	tile      *int
	overlap   *int
	seed      *uint64
	threads   *int
	maxPixels *int64
	lib       *string

	// Backend selection, as the daemon's [backend] keys (backend.Open).
	kind      *string
	engineDir *string
	precision *string
	device    *int
	nvinfer   *string
}

func addModelFlags(fs *flag.FlagSet) *modelFlags {
	def := config.Default()
	return &modelFlags{
		model:     fs.String("model", "", "model folder (default: the shipped model, "+shippedModel+" next to the executable or in the working folder)"),
		tile:      fs.Int("tile", def.Model.Tile, "tile size in pixels (0: whole image at once)"),
		overlap:   fs.Int("overlap", def.Model.Overlap, "overlap between tiles in pixels"),
		seed:      fs.Uint64("seed", def.Model.Seed, "seed of the diffusion's starting noise"),
		threads:   fs.Int("threads", 0, "ONNX Runtime threads (0: one per usable CPU)"),
		maxPixels: fs.Int64("max-pixels", def.Spool.MaxPixels, "refuse images with more pixels than this"),
		lib:       fs.String("onnxruntime-library", "", "libonnxruntime.so.1 to use (default: searched; hidiffd doctor shows which)"),

		// onnxruntime, not the daemon's auto: these commands ran ONNX
		// Runtime before they could choose, and a measurement should not
		// change backend because the machine it runs on has a GPU.
		kind: fs.String("backend", backend.KindONNXRuntime, "backend: onnxruntime (CPU), tensorrt (GPU; a binary built with -tags tensorrt) "+
			"or auto (tensorrt when it works here, else onnxruntime)"),
		engineDir: fs.String("engine-dir", def.Backend.EngineDir, "TensorRT engine cache (missing engines are built there first)"),
		precision: fs.String("precision", def.Backend.Precision, "TensorRT precision: fp16 or fp32"),
		device:    fs.Int("device", def.GPU.Device, "GPU index for TensorRT"),
		nvinfer:   fs.String("tensorrt-library", def.Backend.TensorRTLibrary, "libnvinfer.so.N to use (default: searched)"),
	}
}

// check refuses a backend choice these flags cannot run, naming the flag:
// before any image is read, so a mistake costs nothing.
func (f *modelFlags) check() error {
	switch *f.kind {
	case backend.KindONNXRuntime, backend.KindAuto:
	case backend.KindTensorRT:
		if err := trt.Available(); err != nil {
			return errors.New(backend.NotBuilt("--backend tensorrt"))
		}
		if *f.tile == 0 {
			return errors.New("--backend tensorrt needs a tile size (--tile N > 0): engines are built for a bounded tile")
		}
	default:
		return fmt.Errorf("--backend %q: want onnxruntime, tensorrt or auto", *f.kind)
	}
	switch *f.precision {
	case trt.FP16, trt.FP32:
	default:
		return fmt.Errorf("--precision %q: want fp16 or fp32", *f.precision)
	}
	return nil
}

// config is the flags as the daemon's configuration, for backend.Open.
func (f *modelFlags) config() *config.Config {
	cfg := config.Default()
	cfg.Model.Dir, cfg.Model.Tile, cfg.Model.Overlap, cfg.Model.Seed = *f.model, *f.tile, *f.overlap, *f.seed
	cfg.Spool.MaxPixels = *f.maxPixels
	cfg.Backend.Kind, cfg.Backend.Threads, cfg.Backend.OnnxruntimeLibrary = *f.kind, *f.threads, *f.lib
	cfg.Backend.EngineDir, cfg.Backend.Precision, cfg.Backend.TensorRTLibrary = *f.engineDir, *f.precision, *f.nvinfer
	cfg.GPU.Device = *f.device
	return cfg
}

// resolveModel fills in the shipped model when --model was not given.
func (f *modelFlags) resolveModel() error {
	if *f.model != "" {
		return nil
	}
	dir, tried := findModel()
	if dir == "" {
		return fmt.Errorf("no model found (give --model DIR); looked in:\n  %s", strings.Join(tried, "\n  "))
	}
	*f.model = dir
	return nil
}

// open loads the backend the flags select (backend.Open, as the daemon)
// and a pipeline over it; the caller closes the backend.
func (f *modelFlags) open(ctx context.Context, log zerolog.Logger) (deblur.Backend, *deblur.Pipeline, error) {
	b, err := backend.Open(ctx, f.config(), backend.Options{Log: log})
	if err != nil {
		return nil, nil, err
	}
	pipe, err := deblur.NewPipeline(b, deblur.Options{Tile: *f.tile, Overlap: *f.overlap, Seed: *f.seed})
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return b, pipe, nil
}

func (f *modelFlags) limits() imageio.Limits { return imageio.Limits{MaxPixels: *f.maxPixels} }

type oneResult struct {
	out                   string
	dropped               []string // what the result does not carry (imageio.Image.Dropped)
	w, h                  int
	st                    deblur.Stats
	decode, encode, total time.Duration
	img                   *imageio.Image // the input, decoded (pixels dropped)
	prov                  *imageio.Provenance
	meta                  *imageio.OutputMetadata
}

// deblurOne decodes in, runs the network and writes dst through a temporary
// file in the same folder, renamed into place once complete: a reader (or an
// interrupted run) never sees half an image under the final name.
func deblurOne(ctx context.Context, pipe *deblur.Pipeline, in, dst string, lim imageio.Limits, eo imageio.EncodeOptions, keepMeta bool) (r oneResult, err error) {
	t0 := time.Now()
	img, err := imageio.DecodeFile(in, lim)
	if err != nil {
		return r, err
	}
	r.decode = time.Since(t0)
	r.w, r.h, r.out, r.dropped = img.W, img.H, dst, img.Dropped
	out, st, err := pipe.Run(ctx, deblur.Image{W: img.W, H: img.H, Pix: img.Pix})
	if err != nil {
		return r, err
	}
	r.st = st
	t1 := time.Now()
	// The result's name decides its format (imageio.OutputFormat), and its
	// metadata is prepared for that format.
	img.Format = imageio.OutputFormat(dst, img.Format)
	res := &imageio.Image{W: out.W, H: out.H, Pix: out.Pix, Format: img.Format, BitDepth: img.BitDepth}
	img.Pix, r.img = nil, img
	r.prov = daemon.Provenance(Version(), pipe.Backend(), st)
	r.meta = imageio.PrepareMetadata(img.Meta, img.Format, r.prov, keepMeta)
	eo.Meta = r.meta
	if err := writeAtomic(dst, func(w io.Writer) error { return imageio.Encode(w, res, eo) }); err != nil {
		return r, err
	}
	r.encode = time.Since(t1)
	r.total = time.Since(t0)
	return r, nil
}

// writeAtomic writes dst durably (internal/durable: a temporary dotfile in
// its folder, fsynced, renamed, the folder fsynced), through a 1 MiB buffer,
// mode 0644 less the umask: results are ordinary files for the user. An
// existing dst is replaced, as the user asked for it by name.
func writeAtomic(dst string, write func(io.Writer) error) error {
	return durable.Write(dst, durable.Options{Perm: 0o644}, func(f *os.File) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := write(bw); err != nil {
			return err
		}
		return bw.Flush()
	})
}

func reportFailure(bar *progressbar.ProgressBar, log zerolog.Logger, in string, err error) {
	if bar != nil {
		bar.Clear()
		fmt.Fprintf(os.Stderr, "%s: %v\n", in, err)
		return
	}
	ev := log.Error().Str("name", filepath.Base(in)).Str("path", in)
	var ie *imageio.Error
	if errors.As(err, &ie) {
		ev = ev.Str("stage", ie.Stage).Str("reason", ie.Reason)
	} else {
		ev = ev.Err(err)
	}
	ev.Msg("failed")
}

// inputProblem is a command-line name that could not be read: one failed
// item of the batch, not the end of it.
type inputProblem struct {
	path string
	err  error
}

func (p inputProblem) Error() string { return p.path + ": " + p.err.Error() }

// collectInputs expands folders into their JPEG and PNG files (not
// recursive, sorted); files named explicitly are taken whatever their
// extension (the decoder checks the content). A name that does not exist,
// or a folder that cannot be read, is returned as a problem and the rest go
// on.
func collectInputs(args []string) (files []string, problems []inputProblem) {
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = errors.New("no such file or folder")
			}
			problems = append(problems, inputProblem{a, err})
			continue
		}
		if !st.IsDir() {
			files = append(files, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			problems = append(problems, inputProblem{a, fmt.Errorf("read folder: %w", err)})
			continue
		}
		var names []string
		for _, e := range ents {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".jpg", ".jpeg", ".png":
				if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
					names = append(names, filepath.Join(a, e.Name()))
				}
			}
		}
		sort.Strings(names)
		files = append(files, names...)
	}
	return files, problems
}

// outputGuard decides where each input's result goes and refuses every
// destination that would replace an input. Folders and files are compared
// by identity (device and inode, after following symlinks), never by path
// text: "L" (a symlink to d), "/abs/d", "d/." and "e/../d" are all d.
type outputGuard struct {
	out    string
	outID  fileID
	inputs map[fileID]string // every input file's identity -> the name given
	seen   map[string]string // result name -> the input that took it
}

// fileID is a file's identity: device and inode.
type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, true
}

func newOutputGuard(out string, files []string) (*outputGuard, error) {
	fi, err := os.Stat(out)
	if err != nil {
		return nil, err
	}
	id, ok := idOf(fi)
	if !ok {
		return nil, fmt.Errorf("%s: no device and inode to compare with the inputs", out)
	}
	g := &outputGuard{out: out, outID: id, inputs: map[fileID]string{}, seen: map[string]string{}}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			if id, ok := idOf(fi); ok {
				g.inputs[id] = f
			}
		}
	}
	return g, nil
}

// claim returns the result's path for input in, or why there is none: the
// input's own folder is --out, the result's path is an input file (of this
// batch: an earlier result would replace a later input, or the input is a
// link to a file in --out), or an earlier input had the same name.
func (g *outputGuard) claim(in string) (string, error) {
	name := filepath.Base(in)
	dst := filepath.Join(g.out, name)
	if prev, dup := g.seen[name]; dup {
		return "", fmt.Errorf("skipped: input %s has the same file name as %s, whose result is %s", in, prev, dst)
	}
	if fi, err := os.Stat(filepath.Dir(in)); err == nil {
		if id, ok := idOf(fi); ok && id == g.outID {
			return "", fmt.Errorf("skipped: --out %s is the folder of input %s (the same folder, by device and inode); "+
				"the result would replace the original", g.out, in)
		}
	}
	if fi, err := os.Stat(dst); err == nil {
		if id, ok := idOf(fi); ok {
			if who, isInput := g.inputs[id]; isInput {
				return "", fmt.Errorf("skipped: the result %s would replace input %s (the same file, by device and inode)", dst, who)
			}
		}
	}
	g.seen[name] = in
	return dst, nil
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
