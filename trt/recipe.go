package trt

import (
	"fmt"
	"sort"

	"hidiffd/model"
)

// FP16 hazards of this model family (docs/ARCHITECTURE.md, "ONNX contract"): the
// layer-norm variance and the L2 normalisation inside channel attention sum
// over every pixel of a tile, and their intermediate sums overflow FP16's
// 65504 long before the result would; softmax exponentiates. Those stay in
// FP32 and everything else (convolutions, matrix products: the bulk of the
// time) runs in FP16.
//
// Which nodes those are is decided in one place, the exporter
// (engine_build/precision.py), which writes transformer.fp16.onnx: the
// transformer in float16 with the islands kept float32 through Cast nodes,
// node names unchanged, and the type of every tensor in its value_info.
// The engines follow that graph on every TensorRT:
//
//   - strongly typed (TensorRT 10 and 11): the builder runs the float16
//     graph itself; each tensor has the type the file gives it, nothing is
//     pinned here.
//   - weakly typed (TensorRT 8.5/8.6, which has no strongly typed mode):
//     the builder runs the float32 transformer.onnx with kFP16, and the
//     nodes that compute in float32 in the float16 graph (FP32Pins, read
//     from its types) are pinned to FP32 through precision constraints. The
//     shim also pins LayerNormalization and Softmax layers by type.
//
// TensorRT before 8.6 (JetPack 5) cannot parse LayerNormalization at all;
// for it the model is exported with `--layernorm decomposed`, whose float16
// graph keeps the decomposed chain (ReduceMean, Sub, Mul, ReduceMean, Add,
// Sqrt, Div) in float32, so the same pins follow.

// Typing modes of a TensorRT network (hidiff_trt.h, HIDIFF_TRT_TYPING_*).
const (
	Weak   = "weak"
	Strong = "strong"
)

// TypingFor is the typing mode engines are built with on d: strongly typed
// wherever the shim can (TensorRT 10 and later), else weakly typed (8.x).
// TensorRT 10.x could still build weakly typed (deprecated since 10.12);
// nothing measured argues for it, so it is not offered.
func TypingFor(d DeviceInfo) string {
	if d.TypingModes&CanStrong != 0 {
		return Strong
	}
	return Weak
}

// MixedCounts are the compute nodes of a float16 graph by the type they run
// in (Cast, Identity and Constant nodes not counted).
type MixedCounts struct{ FP16, FP32 int }

// CountMixed reads which nodes of the float16 graph compute in which type.
// A graph with no float16 node is no float16 export, and one with no
// float32 node has no islands: either is refused, with the file named.
func CountMixed(path string, nodes []model.Node, types map[string]int32) (MixedCounts, error) {
	var c MixedCounts
	for _, n := range nodes {
		switch n.OpType {
		case "Cast", "Identity", "Constant":
			continue
		}
		switch model.ComputeType(n, types) {
		case model.ElemFloat16:
			c.FP16++
		case model.ElemFloat:
			c.FP32++
		}
	}
	if c.FP16 == 0 {
		return c, fmt.Errorf("%s: no node computes in float16 (is it the float32 graph?)", path)
	}
	if c.FP32 == 0 {
		return c, fmt.Errorf("%s: no node computes in float32: it has no FP32 islands, and FP16 would overflow in its layer norms and L2 norms; refusing it", path)
	}
	return c, nil
}

// FP32Pins are the weakly typed build's FP32 pins: the names of the nodes
// of the float32 graph (and of their output tensors, sorted) whose
// namesakes compute in float32 in the float16 graph (mixed, with its
// types), and how many nodes that is.
func FP32Pins(fp32 []model.Node, mixed []model.Node, types map[string]int32) (names []string, nodes int) {
	island := map[string]bool{}
	for _, n := range mixed {
		if n.OpType != "Cast" && n.OpType != "Identity" && n.OpType != "Constant" && model.ComputeType(n, types) == model.ElemFloat {
			island[n.Name] = true
		}
	}
	set := map[string]bool{}
	for _, n := range fp32 {
		if n.OpType == "Constant" || !island[n.Name] {
			continue
		}
		nodes++
		set[n.Name] = true
		for _, o := range n.Outputs {
			set[o] = true
		}
	}
	delete(set, "")
	for s := range set {
		names = append(names, s)
	}
	sort.Strings(names)
	return names, nodes
}

// CheckParsable refuses, before minutes of building, a graph that TensorRT
// version (DeviceInfo.TensorRT, "8.5.2") cannot parse: LayerNormalization
// has an ONNX importer only since 8.6.
func CheckParsable(version, path string, nodes []model.Node) error {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil || major > 8 || (major == 8 && minor >= 6) {
		return nil
	}
	for _, n := range nodes {
		if n.OpType == "LayerNormalization" {
			return fmt.Errorf("%s: TensorRT %s cannot parse ONNX LayerNormalization (%s; TensorRT 8.6 and later can): "+
				"export the model with `python3 -m engine_build.export ... --layernorm decomposed`, "+
				"or run it on ONNX Runtime (backend.kind = \"onnxruntime\")", path, version, n.Name)
		}
	}
	return nil
}
