package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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

	"hidiffd/config"
	"hidiffd/daemon"
	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/ort"
)

func init() {
	register(&Command{
		Name:    "deblur",
		Args:    "[--model DIR] [--out DIR] [--tile N] [--seed N] FILE|DIR...",
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

	files, err := collectInputs(inputs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: %v\n", err)
		return 1
	}
	if len(files) == 0 {
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

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	tty := term.IsTerminal(int(os.Stdout.Fd()))
	log, _ := daemon.NewLogger(os.Stderr, "info", "auto")
	if !tty {
		log, _ = daemon.NewLogger(os.Stdout, "info", "json")
	}

	b, pipe, err := mf.open()
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

	outAbs, _ := filepath.Abs(*outDir)
	seen := map[string]string{}
	failed := 0
	for _, in := range files {
		if ctx.Err() != nil {
			break
		}
		name := filepath.Base(in)
		if prev, dup := seen[name]; dup {
			reportFailure(bar, log, in, fmt.Errorf("skipped: %s has the same file name and was written to %s already", prev, filepath.Join(*outDir, name)))
			failed++
			continue
		}
		if inAbs, _ := filepath.Abs(in); filepath.Dir(inAbs) == outAbs {
			reportFailure(bar, log, in, errors.New("skipped: --out is the input's own folder; the result would replace the original"))
			failed++
			continue
		}
		seen[name] = in
		if bar != nil {
			bar.Describe(name)
		}
		r, err := deblurOne(ctx, pipe, in, filepath.Join(*outDir, name),
			mf.limits(), imageio.EncodeOptions{Quality: *quality}, *of.keepMeta)
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
	done := len(files) - failed
	if ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "hidiffd deblur: interrupted\n")
		return 130
	}
	if tty {
		fmt.Printf("%d of %d images written to %s\n", done, len(files), *outDir)
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
	}
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

// open loads the backend and a pipeline over it; the caller closes the
// backend.
func (f *modelFlags) open() (*ort.Backend, *deblur.Pipeline, error) {
	b, err := ort.Open(*f.model, ort.Options{LibraryPath: *f.lib, IntraOpThreads: *f.threads})
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
	r.w, r.h, r.out = img.W, img.H, dst
	out, st, err := pipe.Run(ctx, deblur.Image{W: img.W, H: img.H, Pix: img.Pix})
	if err != nil {
		return r, err
	}
	r.st = st
	t1 := time.Now()
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

func writeAtomic(dst string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	// CreateTemp makes 0600 files; results are ordinary files for the user.
	if err = f.Chmod(0o644 &^ umask()); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

// umask reads the process umask (setting it is the only way to read it).
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
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

// collectInputs expands folders into their JPEG and PNG files (not
// recursive, sorted); files named explicitly are taken whatever their
// extension (the decoder checks the content).
func collectInputs(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			return nil, err
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
		out = append(out, names...)
	}
	return out, nil
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
