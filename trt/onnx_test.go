package trt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Tiny contract-shaped ONNX files for the tests, protobuf written by hand
// (as internal/tinyonnx does for ort's and model's tests): enough for
// model.Inspect (inputs, outputs, metadata) and model.ReadNodes (nodes).
// They are never run: the fake ABI computes its own stand-in ops, and real
// TensorRT is not here.

type pbuf []byte

func (b pbuf) key(field, wire int) pbuf {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}
func (b pbuf) varint(field int, v int64) pbuf {
	return binary.AppendUvarint(b.key(field, 0), uint64(v))
}
func (b pbuf) bytes(field int, v []byte) pbuf {
	b = binary.AppendUvarint(b.key(field, 2), uint64(len(v)))
	return append(b, v...)
}
func (b pbuf) str(field int, s string) pbuf { return b.bytes(field, []byte(s)) }

type tnode struct {
	op, name string
	in, out  []string
}

// valueInfo: a float32 tensor; an int dim is fixed, a string dim dynamic.
func valueInfo(name string, dims ...any) pbuf { return typedValueInfo(name, 1, dims...) }

// typedValueInfo: a tensor of ONNX element type elem.
func typedValueInfo(name string, elem int64, dims ...any) pbuf {
	var shape pbuf
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			shape = shape.bytes(1, pbuf(nil).varint(1, int64(d)))
		case string:
			shape = shape.bytes(1, pbuf(nil).str(2, d))
		}
	}
	tensor := pbuf(nil).varint(1, elem).bytes(2, shape)
	return pbuf(nil).str(1, name).bytes(2, pbuf(nil).bytes(1, tensor))
}

// encodeModel writes a graph of kind "prior" or "transformer" with the
// contract's inputs and output; types, if any, become value_info entries
// (tensor name -> ONNX element type).
func encodeModel(kind string, nodes []tnode, meta map[string]string, types ...map[string]int64) []byte {
	var g pbuf
	for _, n := range nodes {
		var nb pbuf
		for _, in := range n.in {
			nb = nb.str(1, in)
		}
		for _, o := range n.out {
			nb = nb.str(2, o)
		}
		nb = nb.str(3, n.name).str(4, n.op)
		g = g.bytes(1, nb)
	}
	g = g.str(2, "tiny_"+kind)
	if kind == "prior" {
		g = g.bytes(11, valueInfo("blur", 1, 3, "H", "W")).bytes(11, valueInfo("noise", 1, 16, 256))
		g = g.bytes(12, valueInfo("prior", 1, 16, 256))
	} else {
		g = g.bytes(11, valueInfo("blur", 1, 3, "H", "W")).bytes(11, valueInfo("prior", 1, 16, 256))
		g = g.bytes(12, valueInfo("sharp", 1, 3, "H", "W"))
	}
	for _, ts := range types {
		names := make([]string, 0, len(ts))
		for n := range ts {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			g = g.bytes(13, typedValueInfo(n, ts[n]))
		}
	}
	m := pbuf(nil).varint(1, 8).bytes(8, pbuf(nil).str(1, "").varint(2, 17)).bytes(7, g)
	for k, v := range meta {
		m = m.bytes(14, pbuf(nil).str(1, k).str(2, v))
	}
	return m
}

// l2Nodes is a float32 transformer graph as PyTorch exports it: a matrix
// product, F.normalize (ReduceL2, Clip, Expand, Div), a layer norm and a
// softmax.
var l2Nodes = []tnode{
	{"Reshape", "/attn/Reshape", []string{"blur", "shape"}, []string{"/attn/Reshape_output_0"}},
	{"MatMul", "/attn/MatMul", []string{"/attn/Reshape_output_0", "w"}, []string{"/attn/MatMul_output_0"}},
	{"ReduceL2", "/attn/ReduceL2", []string{"/attn/MatMul_output_0"}, []string{"/attn/ReduceL2_output_0"}},
	{"Constant", "/attn/Constant", nil, []string{"/attn/Constant_output_0"}},
	{"Clip", "/attn/Clip", []string{"/attn/ReduceL2_output_0", "/attn/Constant_output_0", ""}, []string{"/attn/Clip_output_0"}},
	{"Shape", "/attn/Shape", []string{"/attn/MatMul_output_0"}, []string{"/attn/Shape_output_0"}},
	{"Expand", "/attn/Expand", []string{"/attn/Clip_output_0", "/attn/Shape_output_0"}, []string{"/attn/Expand_output_0"}},
	{"Div", "/attn/Div", []string{"/attn/MatMul_output_0", "/attn/Expand_output_0"}, []string{"/attn/Div_output_0"}},
	{"LayerNormalization", "/norm/LayerNormalization", []string{"/attn/Div_output_0", "w", "b"}, []string{"/norm/out"}},
	{"Softmax", "/attn/Softmax", []string{"/norm/out"}, []string{"sharp"}},
}

// mixedNodes is l2Nodes as engine_build/precision.py rewrites it: the same
// node names, float16 outside the islands, Cast nodes at their borders and
// at the graph's float32 inputs and output; mixedTypes its value_info.
var (
	mixedNodes = []tnode{
		{"Cast", "blur__fp16__cast", []string{"blur"}, []string{"blur__fp16"}},
		{"Reshape", "/attn/Reshape", []string{"blur__fp16", "shape"}, []string{"/attn/Reshape_output_0"}},
		{"MatMul", "/attn/MatMul", []string{"/attn/Reshape_output_0", "w"}, []string{"/attn/MatMul_output_0"}},
		{"Cast", "/attn/MatMul_output_0__fp32__cast", []string{"/attn/MatMul_output_0"}, []string{"/attn/MatMul_output_0__fp32"}},
		{"ReduceL2", "/attn/ReduceL2", []string{"/attn/MatMul_output_0__fp32"}, []string{"/attn/ReduceL2_output_0"}},
		{"Clip", "/attn/Clip", []string{"/attn/ReduceL2_output_0", "/attn/Constant_output_0", ""}, []string{"/attn/Clip_output_0"}},
		{"Shape", "/attn/Shape", []string{"/attn/MatMul_output_0"}, []string{"/attn/Shape_output_0"}},
		{"Expand", "/attn/Expand", []string{"/attn/Clip_output_0", "/attn/Shape_output_0"}, []string{"/attn/Expand_output_0"}},
		{"Div", "/attn/Div", []string{"/attn/MatMul_output_0__fp32", "/attn/Expand_output_0"}, []string{"/attn/Div_output_0"}},
		{"LayerNormalization", "/norm/LayerNormalization", []string{"/attn/Div_output_0", "w32", "b"}, []string{"/norm/out"}},
		{"Softmax", "/attn/Softmax", []string{"/norm/out"}, []string{"sharp__fp32"}},
		{"Identity", "sharp__out", []string{"sharp__fp32"}, []string{"sharp"}},
	}
	mixedTypes = map[string]int64{
		"blur__fp16": 10, "/attn/Reshape_output_0": 10, "/attn/MatMul_output_0": 10, "/attn/MatMul_output_0__fp32": 1,
		"/attn/ReduceL2_output_0": 1, "/attn/Clip_output_0": 1, "/attn/Shape_output_0": 7, "/attn/Expand_output_0": 1,
		"/attn/Div_output_0": 1, "/norm/out": 1, "sharp__fp32": 1,
	}
)

func tinyMeta(kind string) map[string]string {
	return map[string]string{
		"model": "HI-Diff", "version": "test-1", "preset": "tiny", "timesteps": "4", "pad_multiple": "8",
		"prior_tokens": "16", "prior_channels": "256", "weights_sha256": "0123abcd",
		"training_data": "none (test graph)", "graph": kind,
	}
}

// writeTinyModel writes a model folder whose transformer carries l2Nodes,
// with its float16 graph (mixedNodes) beside it.
func writeTinyModel(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	transformer := encodeModel("transformer", l2Nodes, tinyMeta("transformer"))
	sum := sha256.Sum256(transformer)
	meta := tinyMeta("transformer")
	meta["precision"] = "fp16"
	meta["fp32_source_sha256"] = hex.EncodeToString(sum[:])
	meta["fp32_islands"] = "LayerNormalization 1, ReduceL2 1, Softmax 1, L2 normalisation 1, decomposed layer norm 0"
	files := map[string][]byte{
		"prior.onnx":            encodeModel("prior", []tnode{{"Identity", "p", []string{"noise"}, []string{"prior"}}}, tinyMeta("prior")),
		"transformer.onnx":      transformer,
		"transformer.fp16.onnx": encodeModel("transformer", mixedNodes, meta, mixedTypes),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
