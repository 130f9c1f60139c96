package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/quality"
)

// evalSharp is a test scene: stripes and a gradient, so SSIM has structure
// to find.
func evalSharp(w, h int) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			s := uint8(0)
			if (x/5+y/7)%2 == 0 {
				s = 200
			}
			m.SetNRGBA(x, y, color.NRGBA{s, uint8(x * 255 / w), uint8(y * 255 / h), 255})
		}
	}
	return m
}

// evalBlur is a horizontal box blur of m (a crude motion blur).
func evalBlur(m *image.NRGBA) *image.NRGBA {
	b := m.Bounds()
	out := image.NewNRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var r, g, bl int
			for d := -2; d <= 2; d++ {
				c := m.NRGBAAt(min(max(x+d, 0), b.Max.X-1), y)
				r, g, bl = r+int(c.R), g+int(c.G), bl+int(c.B)
			}
			out.SetNRGBA(x, y, color.NRGBA{uint8(r / 5), uint8(g / 5), uint8(bl / 5), 255})
		}
	}
	return out
}

func writePNG(t *testing.T, path string, m image.Image) {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// evalPairsDir builds DIR/blur and DIR/sharp with: a.png and b.png good
// pairs, c.png sizes that differ, d.png with no sharp partner, e.png with no
// blur partner, and a non-image file that is ignored.
func evalPairsDir(t *testing.T) string {
	dir := t.TempDir()
	for name, sz := range map[string][2]int{"a.png": {72, 40}, "b.png": {50, 36}} {
		s := evalSharp(sz[0], sz[1])
		writePNG(t, filepath.Join(dir, "sharp", name), s)
		writePNG(t, filepath.Join(dir, "blur", name), evalBlur(s))
	}
	writePNG(t, filepath.Join(dir, "blur", "c.png"), evalSharp(40, 32))
	writePNG(t, filepath.Join(dir, "sharp", "c.png"), evalSharp(32, 40))
	writePNG(t, filepath.Join(dir, "blur", "d.png"), evalSharp(24, 24))
	writePNG(t, filepath.Join(dir, "sharp", "e.png"), evalSharp(24, 24))
	os.WriteFile(filepath.Join(dir, "blur", "notes.txt"), []byte("not an image"), 0o644)
	return dir
}

func TestEvalPairUp(t *testing.T) {
	dir := evalPairsDir(t)
	pairs, orphans, err := pairUp(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pairs {
		names = append(names, p.name)
		if p.blur != filepath.Join(dir, "blur", p.name) || p.sharp != filepath.Join(dir, "sharp", p.name) {
			t.Errorf("pair %+v", p)
		}
	}
	if strings.Join(names, ",") != "a.png,b.png,c.png" {
		t.Errorf("pairs %v", names)
	}
	if len(orphans) != 2 || orphans[0].File != "blur/d.png" || orphans[1].File != "sharp/e.png" ||
		!strings.Contains(orphans[0].Error, "no sharp/d.png") || !strings.Contains(orphans[1].Error, "no blur/e.png") {
		t.Errorf("orphans %+v", orphans)
	}
	os.RemoveAll(filepath.Join(dir, "sharp"))
	if _, _, err := pairUp(dir); err == nil || !strings.Contains(err.Error(), "sharp") {
		t.Errorf("no sharp/ folder: %v", err)
	}
}

// evalIdentity is a stand-in model whose output is its input, so the
// output's scores must equal the blurry input's exactly: the input is 8-bit,
// and quantising 8-bit values changes nothing.
type evalIdentity struct{}

func (evalIdentity) Name() string { return "identity" }
func (evalIdentity) Info() deblur.ModelInfo {
	return deblur.ModelInfo{Model: "fake", PadMultiple: 8, PriorTokens: 16, PriorChannels: 256}
}
func (evalIdentity) Close() error { return nil }
func (evalIdentity) Prior(_ context.Context, _, noise deblur.Tensor) (deblur.Tensor, error) {
	return deblur.Tensor{Shape: noise.Shape, Data: append([]float32(nil), noise.Data...)}, nil
}
func (evalIdentity) Transform(_ context.Context, blur, _ deblur.Tensor) (deblur.Tensor, error) {
	return deblur.Tensor{Shape: blur.Shape, Data: append([]float32(nil), blur.Data...)}, nil
}

// TestEvalEvaluator runs the measuring loop in-process (no model needed):
// per-image lines, failures naming the file, averages over the good images
// only, +Inf PSNR printed as +Inf and written to JSON as null.
func TestEvalEvaluator(t *testing.T) {
	dir := evalPairsDir(t)
	// f.png: blur identical to sharp -> PSNR +Inf, SSIM 1.
	writePNG(t, filepath.Join(dir, "blur", "f.png"), evalSharp(30, 20))
	writePNG(t, filepath.Join(dir, "sharp", "f.png"), evalSharp(30, 20))
	// g.png: under the SSIM window.
	writePNG(t, filepath.Join(dir, "blur", "g.png"), evalSharp(10, 30))
	writePNG(t, filepath.Join(dir, "sharp", "g.png"), evalSharp(10, 30))
	// h.png: the sharp partner is not an image.
	writePNG(t, filepath.Join(dir, "blur", "h.png"), evalSharp(30, 20))
	os.WriteFile(filepath.Join(dir, "sharp", "h.png"), []byte("nope"), 0o644)

	pairs, orphans, err := pairUp(dir)
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := deblur.NewPipeline(evalIdentity{}, deblur.Options{Tile: 32, Overlap: 8})
	if err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	e := &evaluator{pipe: pipe, out: &out, errw: &errw}
	rep := &evalReport{Failures: orphans}
	e.run(context.Background(), pairs, rep)

	var got []string
	for _, im := range rep.Images {
		got = append(got, im.Name)
		if im.Output != im.Blur {
			t.Errorf("%s: identity model, but output %+v differs from blur %+v", im.Name, im.Output, im.Blur)
		}
	}
	if strings.Join(got, ",") != "a.png,b.png,f.png" {
		t.Errorf("measured %v", got)
	}
	var failed []string
	for _, f := range rep.Failures {
		failed = append(failed, f.File+": "+f.Error)
	}
	wantFail := []string{"blur/d.png: no sharp", "sharp/e.png: no blur", "blur/c.png: size 40x32, but sharp/c.png is 32x40",
		"blur/g.png: size 10x30 is smaller than the 11x11 SSIM window", "sharp/h.png: probe:"}
	if len(failed) != len(wantFail) {
		t.Fatalf("failures %q", failed)
	}
	for i, w := range wantFail {
		if !strings.HasPrefix(failed[i], w) {
			t.Errorf("failure %d: %q, want prefix %q", i, failed[i], w)
		}
	}
	for _, w := range []string{"hidiffd eval: blur/c.png: size 40x32, but sharp/c.png is 32x40\n", "hidiffd eval: sharp/h.png: "} {
		if !strings.Contains(errw.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, errw.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(strings.Join(strings.Fields(lines[0]), " "), "a.png 72x40 PSNR ") ||
		!strings.Contains(lines[2], "PSNR   +Inf ->   +Inf dB  SSIM 1.0000 -> 1.0000") {
		t.Errorf("stdout:\n%s", out.String())
	}
	a := rep.Average
	if a == nil || a.Images != 3 || !math.IsInf(float64(a.Blur.PSNR), 1) {
		t.Fatalf("average %+v", a)
	}
	wantSSIM := (rep.Images[0].Blur.SSIM + rep.Images[1].Blur.SSIM + 1) / 3
	if math.Abs(a.Blur.SSIM-wantSSIM) > 1e-15 || a.Blur.SSIM >= 1 || a.Blur.SSIM < 0.3 {
		t.Errorf("average SSIM %v, want %v", a.Blur.SSIM, wantSSIM)
	}
	js, err := json.Marshal(rep.Images[2])
	if err != nil || !strings.Contains(string(js), `"blur":{"psnr_db":null,"ssim":1}`) {
		t.Errorf("JSON of the identical pair: %s, %v", js, err)
	}
}

// TestEvalUsage: no model needed to refuse a bad command line or a folder
// without blur/ and sharp/.
func TestEvalUsage(t *testing.T) {
	bin := hidiffdBin(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "eval")
	cmd.Stderr = &stderr
	if code := exitCode(cmd.Run()); code != 2 || !strings.Contains(stderr.String(), "--pairs") {
		t.Errorf("no --pairs: exit %d, stderr %s", code, stderr.String())
	}
	stderr.Reset()
	cmd = exec.Command(bin, "eval", "--pairs", t.TempDir())
	cmd.Stderr = &stderr
	if code := exitCode(cmd.Run()); code != 1 || !strings.Contains(stderr.String(), "blur") {
		t.Errorf("empty folder: exit %d, stderr %s", code, stderr.String())
	}
}

// TestEvalBinary runs `hidiffd eval` with the real (random-weight) s model
// on a tiny pairs folder: good pairs are measured, the size mismatch and the
// missing partners are reported by file name and make the exit status 1, and
// the output scores are exactly those of the files `hidiffd deblur` writes
// with the same flags, measured from disk.
func TestEvalBinary(t *testing.T) {
	modelDir, ortLib := testModel(t)
	bin := hidiffdBin(t)
	dir := evalPairsDir(t)
	jsonPath := filepath.Join(t.TempDir(), "eval.json")
	flags := []string{"--model", modelDir, "--tile", "64", "--overlap", "8", "--seed", "7", "--threads", "1"}

	cmd := exec.Command(bin, append([]string{"eval", "--pairs", dir, "--json", jsonPath}, flags...)...)
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if code := exitCode(cmd.Run()); code != 1 {
		t.Errorf("exit %d, want 1 (a mismatch and missing partners)\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, w := range []string{"blur/c.png: size 40x32, but sharp/c.png is 32x40", "blur/d.png: no sharp/d.png",
		"sharp/e.png: no blur/e.png", "3 file(s) could not be evaluated"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
		}
	}
	// Columns are padded; compare with single spaces.
	flat := strings.Join(strings.Fields(strings.ReplaceAll(stdout.String(), "\n", " | ")), " ")
	for _, w := range []string{"| a.png 72x40 PSNR ", "| b.png 50x36 PSNR ", "| average of 2 images: PSNR "} {
		if !strings.Contains(flat, w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
		}
	}
	t.Logf("stdout:\n%s", stdout.String())

	var rep struct {
		Seed   uint64
		Images []struct {
			Name         string
			Blur, Output struct {
				PSNR float64 `json:"psnr_db"`
				SSIM float64
			}
		}
		Failures []evalFailure
		Average  struct{ Images int }
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if len(rep.Images) != 2 || len(rep.Failures) != 3 || rep.Average.Images != 2 || rep.Seed != 7 {
		t.Fatalf("JSON: %s", data)
	}

	// The same images through `hidiffd deblur`, measured from the saved files.
	out := filepath.Join(t.TempDir(), "out")
	cmd = exec.Command(bin, append([]string{"deblur", "--out", out, filepath.Join(dir, "blur", "a.png"), filepath.Join(dir, "blur", "b.png")}, flags...)...)
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deblur: %v\n%s", err, b)
	}
	for _, im := range rep.Images {
		sharp := decodeForTest(t, filepath.Join(dir, "sharp", im.Name))
		for _, c := range []struct {
			what       string
			file       string
			psnr, ssim float64
		}{
			{"blur", filepath.Join(dir, "blur", im.Name), im.Blur.PSNR, im.Blur.SSIM},
			{"output", filepath.Join(out, im.Name), im.Output.PSNR, im.Output.SSIM},
		} {
			m := decodeForTest(t, c.file)
			p, _ := quality.PSNR(m.Pix, sharp.Pix)
			s, _ := quality.SSIM(m.W, m.H, m.Pix, sharp.Pix)
			if p != c.psnr || s != c.ssim {
				t.Errorf("%s %s: eval says PSNR %v SSIM %v; the file gives %v, %v", im.Name, c.what, c.psnr, c.ssim, p, s)
			}
		}
		if im.Output.PSNR == im.Blur.PSNR {
			t.Errorf("%s: output scores equal the input's; was the model run?", im.Name)
		}
	}
}

func decodeForTest(t *testing.T, path string) *imageio.Image {
	t.Helper()
	m, err := imageio.DecodeFile(path, imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
