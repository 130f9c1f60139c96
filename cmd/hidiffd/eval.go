package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/logging"
	"hidiffd/quality"
)

func init() {
	register(&Command{
		Name:    "eval",
		Args:    "--pairs DIR [--model DIR] [--backend onnxruntime|tensorrt|auto] [--tile N] [--overlap N] [--seed N] [--json FILE] [--limit N]",
		Summary: "measure the model: PSNR and SSIM of DIR/blur/* before and after deblurring, against DIR/sharp/*",
		Run:     runEval,
	})
}

// What the numbers mean, written into the JSON so a model card quoting them
// carries the definition along.
const (
	psnrDefinition = "PSNR on RGB, data range 1 (equivalently 255 on 8-bit values), MSE over all values of all three channels, no border crop; as BasicSR calculate_psnr with crop_border 0"
	ssimDefinition = "SSIM (Wang et al. 2004) per RGB channel, averaged over channels: 11x11 Gaussian window sigma 1.5, K1 0.01, K2 0.03, 'valid' region only (5-pixel border dropped); as BasicSR calculate_ssim with crop_border 0, test_y_channel false"
	quantisation   = "output rounded to 8 bits as the encoder writes it: round(clamp(x,0,1)*255)/255"
)

// dB is a PSNR for JSON: identical images have an infinite PSNR, which JSON
// cannot hold, so it is written as null (and "+Inf" on the text lines).
type dB float64

func (v dB) MarshalJSON() ([]byte, error) {
	if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(v))
}

type scores struct {
	PSNR dB      `json:"psnr_db"`
	SSIM float64 `json:"ssim"`
}

type evalImage struct {
	Name    string  `json:"name"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	Blur    scores  `json:"blur"`   // the blurry input against sharp
	Output  scores  `json:"output"` // the deblurred, 8-bit quantised output against sharp
	Tiles   int     `json:"tiles"`
	Seconds float64 `json:"seconds"` // deblurring only (pipeline Run), not decoding or metrics
}

type evalFailure struct {
	File  string `json:"file"` // relative to --pairs: "blur/x.png" or "sharp/x.png"
	Error string `json:"error"`
}

type evalAverage struct {
	Images  int     `json:"images"`
	Blur    scores  `json:"blur"`
	Output  scores  `json:"output"`
	Seconds float64 `json:"seconds"`
}

type evalReport struct {
	Pairs        string        `json:"pairs"`
	Model        string        `json:"model"`
	ModelInfo    modelInfoJSON `json:"model_info"`
	Backend      string        `json:"backend"`
	Tile         int           `json:"tile"`
	Overlap      int           `json:"overlap"`
	Seed         uint64        `json:"seed"`
	PSNR         string        `json:"psnr"`
	SSIM         string        `json:"ssim"`
	Quantisation string        `json:"quantisation"`
	Images       []evalImage   `json:"images"`
	Failures     []evalFailure `json:"failures"`
	// Average is over the images that were measured (not the failures); the
	// mean of per-image values, as the HI-Diff/BasicSR test scripts report.
	Average *evalAverage `json:"average"`
}

type modelInfoJSON struct {
	Model         string `json:"model"`
	Version       string `json:"version"`
	Preset        string `json:"preset"`
	TrainingData  string `json:"training_data"`
	WeightsSHA256 string `json:"weights_sha256"`
}

func runEval(ctx context.Context, args []string) int {
	fs := newFlagSet(commands["eval"])
	pairsDir := fs.String("pairs", "", "folder holding blur/ and sharp/, with the same file names in both (PNG or JPEG)")
	mf := addModelFlags(fs)
	jsonPath := fs.String("json", "", "also write per-image and average results as JSON to this file")
	limit := fs.Int("limit", 0, "evaluate only the first N pairs, in name order (0: all)")
	rest, st := parseFlags(fs, args)
	if st >= 0 {
		return st
	}
	if *pairsDir == "" || len(rest) > 0 || *limit < 0 {
		fmt.Fprintln(os.Stderr, "hidiffd eval: give --pairs DIR (and no other arguments); --limit is 0 or more")
		fs.Usage()
		return 2
	}

	// The flags first: a backend this binary cannot run is a usage
	// mistake, said before the pairs are read.
	if err := mf.check(); err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd eval: %v\n", err)
		return 2
	}

	pairs, orphans, err := pairUp(*pairsDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd eval: %v\n", err)
		return 1
	}
	if *limit > 0 && len(pairs) > *limit {
		pairs = pairs[:*limit]
	}
	for _, f := range orphans {
		fmt.Fprintf(os.Stderr, "hidiffd eval: %s: %s\n", f.File, f.Error)
	}
	if len(pairs) == 0 {
		fmt.Fprintf(os.Stderr, "hidiffd eval: no image pairs in %s\n", *pairsDir)
		return 1
	}
	if err := mf.resolveModel(); err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd eval: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Selection and engine-build messages go to stderr: stdout is the
	// report.
	log, _ := logging.New(os.Stderr, "info", "auto")
	b, pipe, err := mf.open(ctx, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd eval: %v\n", err)
		return 1
	}
	defer b.Close()
	info := b.Info()
	rep := &evalReport{
		Pairs: *pairsDir, Model: *mf.model, Backend: b.Name(),
		ModelInfo: modelInfoJSON{Model: info.Model, Version: info.Version, Preset: info.Preset,
			TrainingData: info.TrainingData, WeightsSHA256: info.WeightsSHA256},
		Tile: *mf.tile, Overlap: *mf.overlap, Seed: *mf.seed,
		PSNR: psnrDefinition, SSIM: ssimDefinition, Quantisation: quantisation,
		Images: []evalImage{}, Failures: orphans,
	}
	if rep.Failures == nil {
		rep.Failures = []evalFailure{}
	}
	fmt.Printf("%d pairs from %s; model %s (%s %s), %s, tile %d, overlap %d, seed %d\n",
		len(pairs), *pairsDir, *mf.model, info.Model, info.Preset, b.Name(), *mf.tile, *mf.overlap, *mf.seed)

	e := &evaluator{pipe: pipe, lim: mf.limits(), out: os.Stdout, errw: os.Stderr}
	if term.IsTerminal(int(os.Stdout.Fd())) {
		e.bar = progressbar.NewOptions(len(pairs),
			progressbar.OptionSetWriter(os.Stdout),
			progressbar.OptionSetDescription("evaluating"),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionClearOnFinish(),
		)
	}
	e.run(ctx, pairs, rep)
	if ctx.Err() != nil {
		// A partial run would make a misleading model card: no JSON.
		fmt.Fprintln(os.Stderr, "hidiffd eval: interrupted")
		return 130
	}
	printAverage(os.Stdout, rep)
	if *jsonPath != "" {
		err := writeAtomic(*jsonPath, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "hidiffd eval: --json: %v\n", err)
			return 1
		}
	}
	if n := len(rep.Failures); n > 0 {
		fmt.Fprintf(os.Stderr, "hidiffd eval: %d file(s) could not be evaluated (listed above)\n", n)
		return 1
	}
	return 0
}

type evalPair struct {
	name        string // the shared file name
	blur, sharp string // paths
}

// pairUp matches DIR/blur and DIR/sharp by file name (the JPEG and PNG files
// collectInputs finds, sorted). A file without a partner is a failure for
// the report, not a reason to stop: the other pairs are still measured.
func pairUp(dir string) (pairs []evalPair, orphans []evalFailure, err error) {
	list := func(sub string) (map[string]string, []string, error) {
		p := filepath.Join(dir, sub)
		if st, err := os.Stat(p); err != nil {
			return nil, nil, err
		} else if !st.IsDir() {
			return nil, nil, fmt.Errorf("%s is not a folder", p)
		}
		files, problems := collectInputs([]string{p})
		if len(problems) > 0 {
			return nil, nil, problems[0]
		}
		byName := map[string]string{}
		names := make([]string, 0, len(files))
		for _, f := range files {
			n := filepath.Base(f)
			byName[n] = f
			names = append(names, n)
		}
		return byName, names, nil
	}
	blur, blurNames, err := list("blur")
	if err != nil {
		return nil, nil, err
	}
	sharp, sharpNames, err := list("sharp")
	if err != nil {
		return nil, nil, err
	}
	for _, n := range blurNames {
		if s, ok := sharp[n]; ok {
			pairs = append(pairs, evalPair{name: n, blur: blur[n], sharp: s})
		} else {
			orphans = append(orphans, evalFailure{File: "blur/" + n, Error: "no sharp/" + n + " to compare with"})
		}
	}
	for _, n := range sharpNames {
		if _, ok := blur[n]; !ok {
			orphans = append(orphans, evalFailure{File: "sharp/" + n, Error: "no blur/" + n + " to deblur"})
		}
	}
	return pairs, orphans, nil
}

// evaluator measures pairs through one pipeline and prints a line per pair.
type evaluator struct {
	pipe      *deblur.Pipeline
	lim       imageio.Limits
	out, errw io.Writer
	bar       *progressbar.ProgressBar // nil when stdout is not a terminal
}

func (e *evaluator) run(ctx context.Context, pairs []evalPair, rep *evalReport) {
	nameW := 0
	for _, p := range pairs {
		nameW = max(nameW, min(len(p.name), 40))
	}
	for _, p := range pairs {
		if ctx.Err() != nil {
			return
		}
		if e.bar != nil {
			e.bar.Describe(p.name)
		}
		im, failed, err := e.one(ctx, p)
		if e.bar != nil {
			e.bar.Clear()
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(e.errw, "hidiffd eval: %s: %v\n", failed, err)
			rep.Failures = append(rep.Failures, evalFailure{File: failed, Error: err.Error()})
		} else {
			fmt.Fprintf(e.out, "%-*s %9s  PSNR %6.2f -> %6.2f dB  SSIM %.4f -> %.4f  %6.2f s\n",
				nameW, p.name, fmt.Sprintf("%dx%d", im.Width, im.Height),
				float64(im.Blur.PSNR), float64(im.Output.PSNR), im.Blur.SSIM, im.Output.SSIM, im.Seconds)
			rep.Images = append(rep.Images, im)
		}
		if e.bar != nil {
			e.bar.Add(1)
		}
	}
	if e.bar != nil {
		e.bar.Finish()
	}
	if n := len(rep.Images); n > 0 {
		a := &evalAverage{Images: n}
		for _, im := range rep.Images {
			a.Blur.PSNR += im.Blur.PSNR
			a.Blur.SSIM += im.Blur.SSIM
			a.Output.PSNR += im.Output.PSNR
			a.Output.SSIM += im.Output.SSIM
			a.Seconds += im.Seconds
		}
		f := float64(n)
		a.Blur.PSNR /= dB(f)
		a.Output.PSNR /= dB(f)
		a.Blur.SSIM /= f
		a.Output.SSIM /= f
		a.Seconds /= f
		rep.Average = a
	}
}

// one measures a pair; on failure it also says which file the error is
// about ("blur/x.png" or "sharp/x.png").
func (e *evaluator) one(ctx context.Context, p evalPair) (im evalImage, file string, err error) {
	file = "blur/" + p.name
	blur, err := imageio.DecodeFile(p.blur, e.lim)
	if err != nil {
		return im, file, err
	}
	sharp, err := imageio.DecodeFile(p.sharp, e.lim)
	if err != nil {
		return im, "sharp/" + p.name, err
	}
	if blur.W != sharp.W || blur.H != sharp.H {
		return im, file, fmt.Errorf("size %dx%d, but sharp/%s is %dx%d", blur.W, blur.H, p.name, sharp.W, sharp.H)
	}
	if blur.W < quality.Window || blur.H < quality.Window {
		return im, file, fmt.Errorf("size %dx%d is smaller than the %dx%d SSIM window", blur.W, blur.H, quality.Window, quality.Window)
	}
	im = evalImage{Name: p.name, Width: blur.W, Height: blur.H}
	if im.Blur, err = measure(blur, sharp.Pix); err != nil {
		return im, file, err
	}
	out, st, err := e.pipe.Run(ctx, deblur.Image{W: blur.W, H: blur.H, Pix: blur.Pix})
	if err != nil {
		return im, file, err
	}
	im.Tiles, im.Seconds = st.Tiles, st.Total.Seconds()
	// The numbers are those of the file `hidiffd deblur` would save (for an
	// 8-bit output), not of the float output no one ever sees.
	quality.Quantize8(out.Pix)
	res := &imageio.Image{W: out.W, H: out.H, Pix: out.Pix}
	if im.Output, err = measure(res, sharp.Pix); err != nil {
		return im, file, err
	}
	return im, file, nil
}

func measure(img *imageio.Image, ref []float32) (s scores, err error) {
	p, err := quality.PSNR(img.Pix, ref)
	if err != nil {
		return s, err
	}
	ssim, err := quality.SSIM(img.W, img.H, img.Pix, ref)
	if err != nil {
		return s, err
	}
	return scores{PSNR: dB(p), SSIM: ssim}, nil
}

func printAverage(w io.Writer, rep *evalReport) {
	a := rep.Average
	if a == nil {
		fmt.Fprintln(w, "no image could be evaluated")
		return
	}
	fmt.Fprintf(w, "average of %d images: PSNR %.2f -> %.2f dB  SSIM %.4f -> %.4f  %.2f s/image\n",
		a.Images, float64(a.Blur.PSNR), float64(a.Output.PSNR), a.Blur.SSIM, a.Output.SSIM, a.Seconds)
}
