package ort

import (
	"hidiffd/internal/tinyonnx"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInspectReadsContractAndMetadata(t *testing.T) {
	dir := writeTinyModel(t, nil)
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
	bad := writeTinyModel(t, func(p, tr *tinyGraph) { tr.Inputs[0].Name = "image" })
	if _, err := Inspect(bad); err == nil || !strings.Contains(err.Error(), `input "blur" missing`) {
		t.Errorf("renamed input: %v", err)
	}
	if _, err := Inspect(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("empty folder: %v", err)
	}
}

func TestReadNodes(t *testing.T) {
	dir := writeTinyModel(t, nil)
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
