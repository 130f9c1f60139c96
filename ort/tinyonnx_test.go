package ort

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// This file writes tiny contract-shaped ONNX graphs for the tests, encoding
// the protobuf by hand (a few field numbers from onnx.proto) so that the
// error paths can be exercised without Python, without committed binaries
// and without the real exported models:
//
//	prior.onnx:       prior = 0.5*noise + mean(blur)
//	transformer.onnx: sharp = blur + mean(prior)
//
// Every input goes through Cast(to=float) and the output through a Cast to
// its declared type, so a test can declare any element type and still get a
// graph ONNX Runtime accepts; only our contract check should object.

// ONNX TensorProto.DataType values.
const (
	onnxFloat  = 1
	onnxDouble = 11
)

// tinyIO declares one graph input or output. A dims entry is an int (fixed)
// or a string (a named dynamic dimension).
type tinyIO struct {
	name string
	elem int
	dims []any
}

// tinyGraph is one file to write. kind "prior" or "transformer" picks the
// computation; inputs[0] plays blur and inputs[1] noise/prior, whatever
// their names.
type tinyGraph struct {
	kind    string
	inputs  []tinyIO
	outputs []tinyIO
	meta    map[string]string
}

// tinyMeta is the metadata the exporter writes, for a graph of the given kind.
func tinyMeta(kind string) map[string]string {
	return map[string]string{
		"model":          "HI-Diff",
		"version":        "test-1",
		"preset":         "tiny",
		"timesteps":      "4",
		"pad_multiple":   "8",
		"prior_tokens":   "16",
		"prior_channels": "256",
		"weights_sha256": "0123abcd",
		"training_data":  "none (test graph)",
		"graph":          kind,
	}
}

func tinyPrior() tinyGraph {
	return tinyGraph{
		kind: "prior",
		inputs: []tinyIO{
			{"blur", onnxFloat, []any{1, 3, "H", "W"}},
			{"noise", onnxFloat, []any{1, 16, 256}},
		},
		outputs: []tinyIO{{"prior", onnxFloat, []any{1, 16, 256}}},
		meta:    tinyMeta("prior"),
	}
}

func tinyTransformer() tinyGraph {
	return tinyGraph{
		kind: "transformer",
		inputs: []tinyIO{
			{"blur", onnxFloat, []any{1, 3, "H", "W"}},
			{"prior", onnxFloat, []any{1, 16, 256}},
		},
		outputs: []tinyIO{{"sharp", onnxFloat, []any{1, 3, "H", "W"}}},
		meta:    tinyMeta("transformer"),
	}
}

// writeTinyModel writes a model folder and returns its path; edit, when not
// nil, changes the graphs before they are written.
func writeTinyModel(t testing.TB, edit func(prior, transformer *tinyGraph)) string {
	t.Helper()
	p, tr := tinyPrior(), tinyTransformer()
	if edit != nil {
		edit(&p, &tr)
	}
	dir := t.TempDir()
	for name, g := range map[string]tinyGraph{PriorFile: p, TransformerFile: tr} {
		if err := os.WriteFile(filepath.Join(dir, name), g.encode(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// --- protobuf encoding ---

type pb []byte

func (b pb) key(field, wire int) pb { return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire)) }
func (b pb) varint(field int, v int64) pb {
	return binary.AppendUvarint(b.key(field, 0), uint64(v))
}
func (b pb) bytes(field int, v []byte) pb {
	b = binary.AppendUvarint(b.key(field, 2), uint64(len(v)))
	return append(b, v...)
}
func (b pb) str(field int, s string) pb { return b.bytes(field, []byte(s)) }

func attrInt(name string, v int64) pb {
	return pb(nil).str(1, name).varint(3, v).varint(20, 2) // type INT
}

func node(op string, inputs []string, output string, attrs ...pb) pb {
	var n pb
	for _, in := range inputs {
		n = n.str(1, in)
	}
	n = n.str(2, output).str(3, output+"_node").str(4, op)
	for _, a := range attrs {
		n = n.bytes(5, a)
	}
	return n
}

func valueInfo(io tinyIO) pb {
	var shape pb
	for _, d := range io.dims {
		switch d := d.(type) {
		case int:
			shape = shape.bytes(1, pb(nil).varint(1, int64(d)))
		case string:
			shape = shape.bytes(1, pb(nil).str(2, d))
		}
	}
	tensor := pb(nil).varint(1, int64(io.elem)).bytes(2, shape)
	return pb(nil).str(1, io.name).bytes(2, pb(nil).bytes(1, tensor))
}

func scalarFloat(name string, v float32) pb {
	data := binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
	return pb(nil).varint(2, onnxFloat).str(8, name).bytes(9, data) // no dims: a scalar
}

func (g tinyGraph) encode() []byte {
	var gr pb
	var casted []string
	for _, in := range g.inputs {
		gr = gr.bytes(1, node("Cast", []string{in.name}, in.name+"_f", attrInt("to", onnxFloat)))
		casted = append(casted, in.name+"_f")
	}
	for len(casted) < 2 { // a test may delete an input; keep the graph valid
		gr = gr.bytes(1, node("Identity", []string{casted[0]}, "dup_f"))
		casted = append(casted, "dup_f")
	}
	switch g.kind {
	case "prior":
		gr = gr.bytes(5, scalarFloat("half", 0.5))
		gr = gr.bytes(1, node("ReduceMean", []string{casted[0]}, "mean", attrInt("keepdims", 0)))
		gr = gr.bytes(1, node("Mul", []string{casted[1], "half"}, "scaled"))
		gr = gr.bytes(1, node("Add", []string{"scaled", "mean"}, "result"))
	default:
		gr = gr.bytes(1, node("ReduceMean", []string{casted[1]}, "mean", attrInt("keepdims", 0)))
		gr = gr.bytes(1, node("Add", []string{casted[0], "mean"}, "result"))
	}
	for _, out := range g.outputs {
		gr = gr.bytes(1, node("Cast", []string{"result"}, out.name, attrInt("to", int64(out.elem))))
	}
	gr = gr.str(2, "tiny_"+g.kind)
	for _, in := range g.inputs {
		gr = gr.bytes(11, valueInfo(in))
	}
	for _, out := range g.outputs {
		gr = gr.bytes(12, valueInfo(out))
	}
	m := pb(nil).varint(1, 8)                        // ir_version
	m = m.bytes(8, pb(nil).str(1, "").varint(2, 17)) // opset 17
	m = m.str(2, "hidiffd-ort-test")                 // producer_name
	m = m.bytes(7, gr)
	for k, v := range g.meta {
		m = m.bytes(14, pb(nil).str(1, k).str(2, v))
	}
	return m
}
