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
	names, l2, ln := FP32Nodes(nodes)
	if l2 != 1 || ln != 0 {
		t.Errorf("l2 = %d, layer norms = %d", l2, ln)
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
	names, l2, _ = FP32Nodes(shared)
	if l2 != 0 || !slices.Contains(names, "r") || slices.Contains(names, "a") {
		t.Errorf("shared norm: %v, %d", names, l2)
	}
}

// decomposedLN is one layer norm as `export --layernorm decomposed` writes
// it (names and links as in a real export), with its affine tail and an
// unrelated ReduceMean (a mean that is not a layer norm).
var decomposedLN = []ort.Node{
	{Name: "/n/ReduceMean", OpType: "ReduceMean", Inputs: []string{"x"}, Outputs: []string{"m"}},
	{Name: "/n/Sub", OpType: "Sub", Inputs: []string{"x", "m"}, Outputs: []string{"d"}},
	{Name: "/n/Mul", OpType: "Mul", Inputs: []string{"d", "d"}, Outputs: []string{"q"}},
	{Name: "/n/ReduceMean_1", OpType: "ReduceMean", Inputs: []string{"q"}, Outputs: []string{"v"}},
	{Name: "/n/Constant", OpType: "Constant", Outputs: []string{"eps"}},
	{Name: "/n/Add", OpType: "Add", Inputs: []string{"v", "eps"}, Outputs: []string{"ve"}},
	{Name: "/n/Sqrt", OpType: "Sqrt", Inputs: []string{"ve"}, Outputs: []string{"s"}},
	{Name: "/n/Div", OpType: "Div", Inputs: []string{"d", "s"}, Outputs: []string{"y"}},
	{Name: "/n/Mul_1", OpType: "Mul", Inputs: []string{"y", "w"}, Outputs: []string{"yw"}},
	{Name: "/n/Add_1", OpType: "Add", Inputs: []string{"yw", "b"}, Outputs: []string{"out"}},
	{Name: "/pool/ReduceMean", OpType: "ReduceMean", Inputs: []string{"out"}, Outputs: []string{"p"}},
	{Name: "/pool/Sub", OpType: "Sub", Inputs: []string{"p", "out"}, Outputs: []string{"r"}},
}

func TestFP32NodesFindsDecomposedLayerNorm(t *testing.T) {
	names, l2, ln := FP32Nodes(decomposedLN)
	if ln != 1 || l2 != 0 {
		t.Fatalf("layer norms %d, l2 %d; want 1, 0", ln, l2)
	}
	for _, want := range []string{"/n/ReduceMean", "/n/Sub", "/n/Mul", "/n/ReduceMean_1", "/n/Add", "/n/Sqrt", "/n/Div", "d", "v", "y"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s not pinned: %v", want, names)
		}
	}
	// the affine tail and the other mean stay FP16
	for _, not := range []string{"/n/Mul_1", "/n/Add_1", "/n/Constant", "/pool/ReduceMean", "/pool/Sub"} {
		if slices.Contains(names, not) {
			t.Errorf("%s pinned", not)
		}
	}
	// a broken link (Div by something else) is not a layer norm
	broken := slices.Clone(decomposedLN)
	broken[7] = ort.Node{Name: "/n/Div", OpType: "Div", Inputs: []string{"d", "ve"}, Outputs: []string{"y"}}
	if _, _, ln := FP32Nodes(broken); ln != 0 {
		t.Errorf("broken chain recognised")
	}
}

func TestCheckParsable(t *testing.T) {
	fused := []ort.Node{{Name: "/norm/LayerNormalization", OpType: "LayerNormalization"}}
	for _, c := range []struct {
		version string
		nodes   []ort.Node
		refused bool
	}{
		{"8.5.2", fused, true},
		{"8.4.1", fused, true},
		{"8.6.2", fused, false},
		{"10.3.0", fused, false},
		{"8.5.2", decomposedLN, false},
		{"", fused, false}, // unknown version: let the parser say
	} {
		err := CheckParsable(c.version, "m/transformer.onnx", c.nodes)
		if (err != nil) != c.refused {
			t.Errorf("TensorRT %q: err %v, want refused %v", c.version, err, c.refused)
		}
		if err != nil && (!strings.Contains(err.Error(), "m/transformer.onnx") || !strings.Contains(err.Error(), "--layernorm decomposed") ||
			!strings.Contains(err.Error(), "TensorRT "+c.version)) {
			t.Errorf("message does not name the file, the version and the fix: %v", err)
		}
	}
}

// TestFP32NodesOnExport checks the recipe against a real export when one
// is around (make models; HIDIFFD_TEST_MODELS): every ReduceL2 of channel
// attention must be recognised as a full normalisation.
func TestFP32NodesOnExport(t *testing.T) {
	_, nodes, count := exportedGraph(t, "s", "transformer.onnx")
	names, l2, _ := FP32Nodes(nodes)
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

// TestFP32NodesOnDecomposedExport: in the TensorRT 8.5 export every Sqrt
// belongs to a layer norm, and each is recognised and pinned whole.
func TestFP32NodesOnDecomposedExport(t *testing.T) {
	for _, graph := range []string{"prior.onnx", "transformer.onnx"} {
		path, nodes, count := exportedGraph(t, "s-decomposed-ln", graph)
		if count["LayerNormalization"] != 0 || count["Sqrt"] == 0 {
			t.Fatalf("%s: not a decomposed export: %v", graph, count)
		}
		names, _, ln := FP32Nodes(nodes)
		if ln != count["Sqrt"] {
			t.Errorf("%s: %d layer norms recognised, %d Sqrt in the graph", graph, ln, count["Sqrt"])
		}
		if err := CheckParsable("8.5.2", path, nodes); err != nil {
			t.Errorf("TensorRT 8.5 would refuse it: %v", err)
		}
		if !slices.Contains(names, nodes[slices.IndexFunc(nodes, func(n ort.Node) bool { return n.OpType == "Sqrt" })].Name) {
			t.Errorf("%s: first Sqrt not pinned", graph)
		}
	}
}

// exportedGraph reads graph from the export folder (make models, or
// $HIDIFFD_TEST_MODELS), or skips: its path, nodes and op counts.
func exportedGraph(t *testing.T, folder, graph string) (string, []ort.Node, map[string]int) {
	t.Helper()
	root := os.Getenv("HIDIFFD_TEST_MODELS")
	if root == "" {
		root = filepath.Join("..", "build", "models")
	}
	path := filepath.Join(root, folder, graph)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no export at %s (make models)", path)
	}
	nodes, err := ort.ReadNodes(path)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, n := range nodes {
		count[n.OpType]++
	}
	return path, nodes, count
}
