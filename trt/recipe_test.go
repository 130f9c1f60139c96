package trt

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hidiffd/ort"
)

func TestFP32NodesFindsTheHazards(t *testing.T) {
	nodes := make([]ort.Node, len(l2Nodes))
	for i, n := range l2Nodes {
		nodes[i] = ort.Node{Name: n.name, OpType: n.op, Inputs: n.in, Outputs: n.out}
	}
	names, l2 := FP32Nodes(nodes)
	if l2 != 1 {
		t.Errorf("l2 = %d", l2)
	}
	for _, want := range []string{"/attn/ReduceL2", "/attn/Clip", "/attn/Expand", "/attn/Div", "/attn/Div_output_0",
		"/norm/LayerNormalization", "/attn/Softmax"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s not pinned: %v", want, names)
		}
	}
	// Shape arithmetic and the producer of the normalised tensor stay FP16.
	for _, not := range []string{"/attn/Shape", "/attn/Reshape", "/attn/Constant", ""} {
		if slices.Contains(names, not) {
			t.Errorf("%q pinned", not)
		}
	}
	if !slices.IsSorted(names) {
		t.Error("names not sorted")
	}

	// A ReduceL2 whose result is shared is pinned, but its consumers are
	// not followed: that is not the normalisation pattern.
	shared := []ort.Node{
		{Name: "r", OpType: "ReduceL2", Inputs: []string{"x"}, Outputs: []string{"n"}},
		{Name: "a", OpType: "Div", Inputs: []string{"x", "n"}, Outputs: []string{"y"}},
		{Name: "b", OpType: "Mul", Inputs: []string{"x", "n"}, Outputs: []string{"z"}},
	}
	names, l2 = FP32Nodes(shared)
	if l2 != 0 || !slices.Contains(names, "r") || slices.Contains(names, "a") {
		t.Errorf("shared norm: %v, %d", names, l2)
	}
}

// TestFP32NodesOnExport checks the recipe against a real export when one
// is around (make models; HIDIFF_TEST_MODELS): every ReduceL2 of channel
// attention must be recognised as a full normalisation.
func TestFP32NodesOnExport(t *testing.T) {
	root := os.Getenv("HIDIFF_TEST_MODELS")
	if root == "" {
		root = filepath.Join("..", "build", "models")
	}
	path := filepath.Join(root, "s", "transformer.onnx")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no exported model at %s", path)
	}
	nodes, err := ort.ReadNodes(path)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, n := range nodes {
		count[n.OpType]++
	}
	names, l2 := FP32Nodes(nodes)
	if count["ReduceL2"] == 0 || l2 != count["ReduceL2"] {
		t.Errorf("recognised %d of %d ReduceL2 normalisations", l2, count["ReduceL2"])
	}
	pinned := 0
	for _, n := range nodes {
		if slices.Contains(names, n.Name) {
			pinned++
			if n.OpType == "Conv" || n.OpType == "MatMul" {
				t.Errorf("%s (%s) pinned: the heavy layers must stay FP16", n.Name, n.OpType)
			}
		}
	}
	want := count["LayerNormalization"] + count["Softmax"] + 4*count["ReduceL2"]
	if pinned != want {
		t.Errorf("%d nodes pinned, want %d (%v)", pinned, want, count)
	}
	if !strings.Contains(strings.Join(names, "\n"), "/attn/ReduceL2") {
		t.Errorf("unexpected names: %v", names[:5])
	}
}
