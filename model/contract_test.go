package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/internal/tinyonnx"
)

// mustErr fails unless err is non-nil and mentions every want.
func mustErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", want)
	}
	t.Logf("error: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestSwappedFiles(t *testing.T) {
	dir := tinyonnx.TempModel(t, nil)
	p, tr := filepath.Join(dir, PriorFile), filepath.Join(dir, TransformerFile)
	tmp := filepath.Join(dir, "tmp")
	for _, mv := range [][2]string{{p, tmp}, {tr, p}, {tmp, tr}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Inspect(dir)
	mustErr(t, err, p, `input "noise" missing`, "looks like transformer.onnx", "files swapped")
}

func TestWrongIO(t *testing.T) {
	cases := []struct {
		name string
		edit func(p, tr *tinyonnx.Graph)
		want []string
	}{
		{"renamed input", func(p, tr *tinyonnx.Graph) { tr.Inputs[0].Name = "image" },
			[]string{TransformerFile, `input "blur" missing`, "image [1 3 ? ?] float32", "blur [1 3 H W] float32"}},
		{"renamed output", func(p, tr *tinyonnx.Graph) { p.Outputs[0].Name = "z" },
			[]string{PriorFile, `output "prior" missing`}},
		{"extra input", func(p, tr *tinyonnx.Graph) {
			p.Inputs = append(p.Inputs, tinyonnx.IO{Name: "t", Elem: tinyonnx.Float, Dims: []any{1}})
		}, []string{PriorFile, `unexpected input "t"`}},
		{"missing input", func(p, tr *tinyonnx.Graph) { tr.Inputs = tr.Inputs[:1] },
			[]string{TransformerFile, `input "prior" missing`}},
		{"double input", func(p, tr *tinyonnx.Graph) { p.Inputs[0].Elem = tinyonnx.Double },
			[]string{PriorFile, `input "blur"`, "element type DOUBLE, expected float32"}},
		{"double output", func(p, tr *tinyonnx.Graph) { tr.Outputs[0].Elem = tinyonnx.Double },
			[]string{TransformerFile, `output "sharp"`, "DOUBLE"}},
		{"fixed height", func(p, tr *tinyonnx.Graph) { tr.Inputs[0].Dims = []any{1, 3, 64, "W"} },
			[]string{TransformerFile, `input "blur"`, "[1 3 64 ?]", "expected [1 3 H W]", "must be dynamic"}},
		{"rank", func(p, tr *tinyonnx.Graph) { p.Inputs[0].Dims = []any{3, "H", "W"} },
			[]string{PriorFile, `input "blur"`, "rank 3, expected 4"}},
		{"channels", func(p, tr *tinyonnx.Graph) { p.Inputs[0].Dims = []any{1, 4, "H", "W"} },
			[]string{PriorFile, "dimension 1 is 4, expected 3"}},
		{"prior tokens disagree", func(p, tr *tinyonnx.Graph) {
			tr.Inputs[1].Dims = []any{1, 8, 256}
		}, []string{TransformerFile, `input "prior"`, "token count 8 disagrees with 16"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Inspect(tinyonnx.TempModel(t, c.edit))
			mustErr(t, err, c.want...)
		})
	}
}

func TestBadMetadata(t *testing.T) {
	cases := []struct {
		name string
		edit func(p, tr *tinyonnx.Graph)
		want []string
	}{
		{"no preset", func(p, tr *tinyonnx.Graph) { delete(tr.Meta, "preset") },
			[]string{TransformerFile, `"preset" missing`}},
		{"empty preset", func(p, tr *tinyonnx.Graph) { p.Meta["preset"] = " " },
			[]string{PriorFile, `"preset" missing or empty`}},
		{"no timesteps", func(p, tr *tinyonnx.Graph) { delete(p.Meta, "timesteps") },
			[]string{PriorFile, `"timesteps" missing`}},
		{"no pad multiple", func(p, tr *tinyonnx.Graph) { delete(tr.Meta, "pad_multiple") },
			[]string{TransformerFile, `"pad_multiple" missing`}},
		{"pad multiple not a number", func(p, tr *tinyonnx.Graph) { p.Meta["pad_multiple"] = "eight" },
			[]string{PriorFile, `"pad_multiple" = "eight"`, "positive integer"}},
		{"zero timesteps", func(p, tr *tinyonnx.Graph) { p.Meta["timesteps"] = "0" },
			[]string{PriorFile, `"timesteps" = "0"`}},
		{"bad prior_tokens", func(p, tr *tinyonnx.Graph) { tr.Meta["prior_tokens"] = "16.0" },
			[]string{TransformerFile, `"prior_tokens" = "16.0"`}},
		{"prior_channels vs shape", func(p, tr *tinyonnx.Graph) {
			p.Meta["prior_channels"], tr.Meta["prior_channels"] = "128", "128"
		}, []string{"prior_channels is 128", "but 256", `"noise" shape`}},
		{"presets differ", func(p, tr *tinyonnx.Graph) { tr.Meta["preset"] = "gopro" },
			[]string{PriorFile, TransformerFile, `"tiny"`, `"gopro"`, "different exports"}},
		{"weights differ", func(p, tr *tinyonnx.Graph) { p.Meta["weights_sha256"] = "ffff" },
			[]string{PriorFile, TransformerFile, "weights_sha256", "ffff", "0123abcd"}},
		{"graph key", func(p, tr *tinyonnx.Graph) { p.Meta["graph"] = "transformer" },
			[]string{PriorFile, `"graph" = "transformer"`, `expected "prior"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Inspect(tinyonnx.TempModel(t, c.edit))
			mustErr(t, err, c.want...)
		})
	}
}
