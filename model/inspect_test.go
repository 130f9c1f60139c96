package model

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/internal/tinyonnx"
)

func TestInspectReadsContractAndMetadata(t *testing.T) {
	dir := tinyonnx.TempModel(t, nil)
	m, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Info.Preset != "tiny" || m.Info.PadMultiple != 8 || m.Info.PriorTokens != 16 || m.Info.PriorChannels != 256 {
		t.Errorf("info = %+v", m.Info)
	}
	if m.Metadata[1]["graph"] != "transformer" || m.PriorPath != filepath.Join(dir, PriorFile) {
		t.Errorf("metadata/paths = %v %s", m.Metadata, m.PriorPath)
	}
	if PriorIO.Inputs != [2]string{"blur", "noise"} || TransformerIO.Output != "sharp" {
		t.Errorf("contract names: %+v %+v", PriorIO, TransformerIO)
	}

	// The same refusals as Open, before any library is involved.
	bad := tinyonnx.TempModel(t, func(p, tr *tinyonnx.Graph) { tr.Inputs[0].Name = "image" })
	if _, err := Inspect(bad); err == nil || !strings.Contains(err.Error(), `input "blur" missing`) {
		t.Errorf("renamed input: %v", err)
	}
	if _, err := Inspect(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("empty folder: %v", err)
	}
}

func TestReadNodes(t *testing.T) {
	dir := tinyonnx.TempModel(t, nil)
	nodes, err := ReadNodes(filepath.Join(dir, TransformerFile))
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, n := range nodes {
		ops = append(ops, n.OpType)
	}
	// tinyonnx.Graph.Encode: a Cast per input, ReduceMean, Add, a Cast per output.
	if got := strings.Join(ops, ","); got != "Cast,Cast,ReduceMean,Add,Cast" {
		t.Fatalf("ops = %s", got)
	}
	add := nodes[3]
	if add.Name != "result_node" || strings.Join(add.Inputs, ",") != "blur_f,mean" || strings.Join(add.Outputs, ",") != "result" {
		t.Errorf("Add node = %+v", add)
	}

	// An unnamed node gets the ONNX parser's layer name; a truncated file
	// is an error that names it.
	unnamed := tinyonnx.PB(nil).Str(1, "x").Str(2, "y").Str(4, "Relu")
	model := tinyonnx.PB(nil).Varint(1, 8).Bytes(7, tinyonnx.PB(nil).Bytes(1, unnamed))
	p := filepath.Join(t.TempDir(), "x.onnx")
	if err := os.WriteFile(p, model, 0o644); err != nil {
		t.Fatal(err)
	}
	if nodes, err := ReadNodes(p); err != nil || len(nodes) != 1 || nodes[0].Name != "node_of_y" || nodes[0].OpType != "Relu" {
		t.Errorf("unnamed node: %+v, %v", nodes, err)
	}
	if err := os.WriteFile(p, model[:len(model)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNodes(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("truncated file: %v", err)
	}
}

func TestInspectMixed(t *testing.T) {
	dir := tinyonnx.TempModel(t, nil)
	m, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InspectMixed(m); !errors.Is(err, ErrNoMixed) || !strings.Contains(err.Error(), "engine_build.precision mixed "+dir) {
		t.Errorf("no float16 graph: %v", err)
	}
	write := func(edit func(g *tinyonnx.Graph)) {
		g := tinyonnx.Transformer()
		g.Meta["precision"] = "fp16"
		g.Meta["fp32_source_sha256"] = "abc"
		g.Meta["fp32_islands"] = "Softmax 1"
		if edit != nil {
			edit(&g)
		}
		if err := os.WriteFile(filepath.Join(dir, MixedFile), g.Encode(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(nil)
	mx, err := InspectMixed(m)
	if err != nil || mx.SourceSHA256 != "abc" || mx.Islands != "Softmax 1" || mx.Path != filepath.Join(dir, MixedFile) {
		t.Errorf("mixed = %+v, %v", mx, err)
	}
	for want, edit := range map[string]func(g *tinyonnx.Graph){
		`metadata "precision" = "fp32"`: func(g *tinyonnx.Graph) { g.Meta["precision"] = "fp32" },
		`weights_sha256 "other"`:        func(g *tinyonnx.Graph) { g.Meta["weights_sha256"] = "other" },
		`output "sharp" missing`:        func(g *tinyonnx.Graph) { g.Outputs[0].Name = "out" },
	} {
		t.Run(want, func(t *testing.T) {
			write(edit)
			if _, err := InspectMixed(m); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v", want, err)
			}
		})
	}
}

// TestReadTypes reads the shipped model's float16 graph: its boundary is
// float32, the convolutions compute in float16 and the layer norms in
// float32 (engine_build/precision.py).
func TestReadTypes(t *testing.T) {
	path := filepath.Join("..", "models", "default", MixedFile)
	types, err := ReadTypes(path)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := ReadNodes(path)
	if err != nil {
		t.Fatal(err)
	}
	if types["blur"] != ElemFloat || types["sharp"] != ElemFloat {
		t.Errorf("boundary: blur %d, sharp %d", types["blur"], types["sharp"])
	}
	by := map[string]map[int32]int{}
	for _, n := range nodes {
		if by[n.OpType] == nil {
			by[n.OpType] = map[int32]int{}
		}
		by[n.OpType][ComputeType(n, types)]++
	}
	if by["Conv"][ElemFloat16] == 0 || by["Conv"][ElemFloat] != 0 || by["LayerNormalization"][ElemFloat] == 0 || by["LayerNormalization"][ElemFloat16] != 0 {
		t.Errorf("compute types by op: %v", by)
	}
}
