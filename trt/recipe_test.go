package trt

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hidiffd/model"
)

func toNodes(ts []tnode) []model.Node {
	nodes := make([]model.Node, len(ts))
	for i, n := range ts {
		nodes[i] = model.Node{Name: n.name, OpType: n.op, Inputs: n.in, Outputs: n.out}
	}
	return nodes
}

func toTypes(ts map[string]int64) map[string]int32 {
	out := map[string]int32{}
	for k, v := range ts {
		out[k] = int32(v)
	}
	return out
}

func TestFP32PinsFromTheFloat16Graph(t *testing.T) {
	names, n := FP32Pins(toNodes(l2Nodes), toNodes(mixedNodes), toTypes(mixedTypes))
	if n != 6 {
		t.Errorf("%d nodes pinned, want 6: %v", n, names)
	}
	for _, want := range []string{"/attn/ReduceL2", "/attn/Clip", "/attn/Expand", "/attn/Div", "/attn/Div_output_0",
		"/norm/LayerNormalization", "/attn/Softmax", "sharp"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s not pinned: %v", want, names)
		}
	}
	// What runs in float16 there stays FP16 here: the matrix product, shape
	// arithmetic, the constant; nor do the float16 graph's casts leak in.
	for _, not := range []string{"/attn/MatMul", "/attn/Reshape", "/attn/Shape", "/attn/Constant", "sharp__out", ""} {
		if slices.Contains(names, not) {
			t.Errorf("%q pinned", not)
		}
	}
	if !slices.IsSorted(names) {
		t.Error("names not sorted")
	}
	// Without types (a float16 graph without value_info) nothing is pinned,
	// which Build refuses.
	if names, n := FP32Pins(toNodes(l2Nodes), toNodes(mixedNodes), nil); n != 0 || len(names) != 0 {
		t.Errorf("untyped: %v", names)
	}
}

func TestCountMixed(t *testing.T) {
	c, err := CountMixed("m.onnx", toNodes(mixedNodes), toTypes(mixedTypes))
	if err != nil || c != (MixedCounts{FP16: 2, FP32: 6}) {
		t.Errorf("counts %+v, %v", c, err)
	}
	all32 := toTypes(mixedTypes)
	for k, v := range all32 {
		if v == model.ElemFloat16 {
			all32[k] = model.ElemFloat
		}
	}
	if _, err := CountMixed("m.onnx", toNodes(mixedNodes), all32); err == nil || !strings.Contains(err.Error(), "no node computes in float16") {
		t.Errorf("float32 graph: %v", err)
	}
	all16 := toTypes(mixedTypes)
	for k, v := range all16 {
		if v == model.ElemFloat {
			all16[k] = model.ElemFloat16
		}
	}
	if _, err := CountMixed("m.onnx", toNodes(mixedNodes), all16); err == nil || !strings.Contains(err.Error(), "no FP32 islands") {
		t.Errorf("no islands: %v", err)
	}
}

func TestTypingFor(t *testing.T) {
	for _, c := range []struct {
		modes int
		want  string
	}{{CanWeak, Weak}, {CanWeak | CanStrong, Strong}, {CanStrong, Strong}} {
		t.Run(fmt.Sprintf("modes%d", c.modes), func(t *testing.T) {
			if got := TypingFor(DeviceInfo{TypingModes: c.modes}); got != c.want {
				t.Errorf("modes %d: %s, want %s", c.modes, got, c.want)
			}
		})
	}
}

// decomposedLN is one layer norm as `export --layernorm decomposed` writes
// it, with its affine tail and an unrelated ReduceMean.
var decomposedLN = []model.Node{
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
}

func TestCheckParsable(t *testing.T) {
	fused := []model.Node{{Name: "/norm/LayerNormalization", OpType: "LayerNormalization"}}
	for _, c := range []struct {
		version string
		nodes   []model.Node
		refused bool
	}{
		{"8.5.2", fused, true},
		{"8.4.1", fused, true},
		{"8.6.2", fused, false},
		{"10.3.0", fused, false},
		{"8.5.2", decomposedLN, false},
		{"11.1.0", fused, false},
		{"", fused, false}, // unknown version: let the parser say
	} {
		t.Run(fmt.Sprintf("TensorRT %q/%d nodes", c.version, len(c.nodes)), func(t *testing.T) {
			err := CheckParsable(c.version, "m/transformer.onnx", c.nodes)
			if (err != nil) != c.refused {
				t.Errorf("TensorRT %q: err %v, want refused %v", c.version, err, c.refused)
			}
			if err != nil && (!strings.Contains(err.Error(), "m/transformer.onnx") || !strings.Contains(err.Error(), "--layernorm decomposed") ||
				!strings.Contains(err.Error(), "TensorRT "+c.version)) {
				t.Errorf("message does not name the file, the version and the fix: %v", err)
			}
		})
	}
}

// TestFP32PinsOnExport checks, on a real export when one is around (make
// models; HIDIFFD_TEST_MODELS), that the pins read from the float16 graph's
// types are the FP16 hazards and only them: every LayerNormalization and
// Softmax, and each L2 normalisation of channel attention whole (ReduceL2,
// Clip, Expand, Div), never a convolution or matrix product.
func TestFP32PinsOnExport(t *testing.T) {
	_, nodes, count := exportedGraph(t, "s", "transformer.onnx")
	mixedPath, mixed, _ := exportedGraph(t, "s", model.MixedFile)
	types, err := model.ReadTypes(mixedPath)
	if err != nil {
		t.Fatal(err)
	}
	names, n := FP32Pins(nodes, mixed, types)
	if want := count["LayerNormalization"] + count["Softmax"] + 4*count["ReduceL2"]; n != want || count["ReduceL2"] == 0 {
		t.Errorf("%d nodes pinned, want %d (%v)", n, want, count)
	}
	for _, nd := range nodes {
		if slices.Contains(names, nd.Name) && (nd.OpType == "Conv" || nd.OpType == "MatMul" || nd.OpType == "Gemm") {
			t.Errorf("%s (%s) pinned: the heavy layers must stay FP16", nd.Name, nd.OpType)
		}
	}
	if c, err := CountMixed(mixedPath, mixed, types); err != nil || c.FP32 != n {
		t.Errorf("float16 graph: %+v, %v (%d pins)", c, err, n)
	}
}

// TestFP32PinsOnDecomposedExport: in the TensorRT 8.5 export every Sqrt
// belongs to a layer norm, and each is pinned whole (seven nodes).
func TestFP32PinsOnDecomposedExport(t *testing.T) {
	path, nodes, count := exportedGraph(t, "s-decomposed-ln", "transformer.onnx")
	mixedPath, mixed, _ := exportedGraph(t, "s-decomposed-ln", model.MixedFile)
	types, err := model.ReadTypes(mixedPath)
	if err != nil {
		t.Fatal(err)
	}
	if count["LayerNormalization"] != 0 || count["Sqrt"] == 0 {
		t.Fatalf("not a decomposed export: %v", count)
	}
	names, n := FP32Pins(nodes, mixed, types)
	if want := 7*count["Sqrt"] + count["Softmax"] + 4*count["ReduceL2"]; n != want {
		t.Errorf("%d nodes pinned, want %d (%v)", n, want, count)
	}
	for _, nd := range nodes {
		if (nd.OpType == "Sqrt" || nd.OpType == "ReduceMean") && !slices.Contains(names, nd.Name) {
			t.Errorf("%s (%s) not pinned", nd.Name, nd.OpType)
		}
	}
	if err := CheckParsable("8.5.2", path, nodes); err != nil {
		t.Errorf("TensorRT 8.5 would refuse it: %v", err)
	}
}

// TestShippedModelFloat16Graph: models/default's float16 graph is the
// rewrite of the transformer.onnx beside it, so every TensorRT's FP16 plan
// accepts it. After new weights: python3 -m engine_build.precision mixed models/default.
func TestShippedModelFloat16Graph(t *testing.T) {
	m, err := model.Inspect(filepath.Join("..", "models", "default"))
	if err != nil {
		t.Fatal(err)
	}
	p := Profile{Min: Size{8, 8}, Opt: Size{384, 384}, Max: Size{384, 384}}
	for _, c := range []struct {
		name  string
		modes int
	}{{"weakly typed", CanWeak}, {"strongly typed", CanStrong}} {
		t.Run(c.name, func(t *testing.T) {
			d := DeviceInfo{TensorRT: "x", GPU: "g", ComputeCapability: "8.7", TypingModes: c.modes}
			k, err := KeyFor(m, d, FP16, p)
			if err != nil {
				t.Fatalf("typing modes %d: %v", c.modes, err)
			}
			if k.Typing == Strong && k.ONNXPrecision != FP16 || k.Typing == Weak && k.PinsONNX == "" {
				t.Errorf("key %+v", k)
			}
		})
	}
}

// exportedGraph reads graph from the export folder (make models, or
// $HIDIFFD_TEST_MODELS), or skips: its path, nodes and op counts.
func exportedGraph(t *testing.T, folder, graph string) (string, []model.Node, map[string]int) {
	t.Helper()
	root := os.Getenv("HIDIFFD_TEST_MODELS")
	if root == "" {
		root = filepath.Join("..", "build", "models")
	}
	path := filepath.Join(root, folder, graph)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no export at %s (make models)", path)
	}
	nodes, err := model.ReadNodes(path)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, n := range nodes {
		count[n.OpType]++
	}
	return path, nodes, count
}
