// Package tinyonnx writes tiny contract-shaped ONNX graphs for tests,
// encoding the protobuf by hand (a few field numbers from onnx.proto), so
// that tests can run ONNX Runtime without Python, without committed binaries
// and without the real exported models:
//
//	prior.onnx:       prior = 0.5*noise + mean(blur)
//	transformer.onnx: sharp = blur + mean(prior)
//
// Every input goes through Cast(to=float) and the output through a Cast to
// its declared type, so a test can declare any element type and still get a
// graph ONNX Runtime accepts; only the contract check should object.
package tinyonnx

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// ONNX TensorProto.DataType values.
const (
	Float  = 1
	Double = 11
)

// IO declares one graph input or output. A dims entry is an int (fixed)
// or a string (a named dynamic dimension).
type IO struct {
	Name string
	Elem int
	Dims []any
}

// Graph is one file to write. kind "prior" or "transformer" picks the
// computation; inputs[0] plays blur and inputs[1] noise/prior, whatever
// their names.
type Graph struct {
	Kind    string
	Inputs  []IO
	Outputs []IO
	Meta    map[string]string
}

// Meta is the metadata the exporter writes, for a graph of the given kind.
func Meta(kind string) map[string]string {
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

func Prior() Graph {
	return Graph{
		Kind: "prior",
		Inputs: []IO{
			{"blur", Float, []any{1, 3, "H", "W"}},
			{"noise", Float, []any{1, 16, 256}},
		},
		Outputs: []IO{{"prior", Float, []any{1, 16, 256}}},
		Meta:    Meta("prior"),
	}
}

func Transformer() Graph {
	return Graph{
		Kind: "transformer",
		Inputs: []IO{
			{"blur", Float, []any{1, 3, "H", "W"}},
			{"prior", Float, []any{1, 16, 256}},
		},
		Outputs: []IO{{"sharp", Float, []any{1, 3, "H", "W"}}},
		Meta:    Meta("transformer"),
	}
}

// WriteModel writes prior.onnx and transformer.onnx into dir; edit, when
// not nil, changes the graphs before they are written.
func WriteModel(dir string, edit func(prior, transformer *Graph)) error {
	p, tr := Prior(), Transformer()
	if edit != nil {
		edit(&p, &tr)
	}
	for name, g := range map[string]Graph{"prior.onnx": p, "transformer.onnx": tr} {
		if err := os.WriteFile(filepath.Join(dir, name), g.Encode(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// --- protobuf encoding ---

// PB builds protobuf bytes: a field key, then its value.
type PB []byte

func (b PB) Key(field, wire int) PB { return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire)) }
func (b PB) Varint(field int, v int64) PB {
	return binary.AppendUvarint(b.Key(field, 0), uint64(v))
}
func (b PB) Bytes(field int, v []byte) PB {
	b = binary.AppendUvarint(b.Key(field, 2), uint64(len(v)))
	return append(b, v...)
}
func (b PB) Str(field int, s string) PB { return b.Bytes(field, []byte(s)) }

func attrInt(name string, v int64) PB {
	return PB(nil).Str(1, name).Varint(3, v).Varint(20, 2) // type INT
}

func node(op string, inputs []string, output string, attrs ...PB) PB {
	var n PB
	for _, in := range inputs {
		n = n.Str(1, in)
	}
	n = n.Str(2, output).Str(3, output+"_node").Str(4, op)
	for _, a := range attrs {
		n = n.Bytes(5, a)
	}
	return n
}

func valueInfo(io IO) PB {
	var shape PB
	for _, d := range io.Dims {
		switch d := d.(type) {
		case int:
			shape = shape.Bytes(1, PB(nil).Varint(1, int64(d)))
		case string:
			shape = shape.Bytes(1, PB(nil).Str(2, d))
		}
	}
	tensor := PB(nil).Varint(1, int64(io.Elem)).Bytes(2, shape)
	return PB(nil).Str(1, io.Name).Bytes(2, PB(nil).Bytes(1, tensor))
}

func scalarFloat(name string, v float32) PB {
	data := binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
	return PB(nil).Varint(2, Float).Str(8, name).Bytes(9, data) // no dims: a scalar
}

// Encode is the graph as an ONNX model file.
func (g Graph) Encode() []byte {
	var gr PB
	var casted []string
	for _, in := range g.Inputs {
		gr = gr.Bytes(1, node("Cast", []string{in.Name}, in.Name+"_f", attrInt("to", Float)))
		casted = append(casted, in.Name+"_f")
	}
	for len(casted) < 2 { // a test may delete an input; keep the graph valid
		gr = gr.Bytes(1, node("Identity", []string{casted[0]}, "dup_f"))
		casted = append(casted, "dup_f")
	}
	switch g.Kind {
	case "prior":
		gr = gr.Bytes(5, scalarFloat("half", 0.5))
		gr = gr.Bytes(1, node("ReduceMean", []string{casted[0]}, "mean", attrInt("keepdims", 0)))
		gr = gr.Bytes(1, node("Mul", []string{casted[1], "half"}, "scaled"))
		gr = gr.Bytes(1, node("Add", []string{"scaled", "mean"}, "result"))
	default:
		gr = gr.Bytes(1, node("ReduceMean", []string{casted[1]}, "mean", attrInt("keepdims", 0)))
		gr = gr.Bytes(1, node("Add", []string{casted[0], "mean"}, "result"))
	}
	for _, out := range g.Outputs {
		gr = gr.Bytes(1, node("Cast", []string{"result"}, out.Name, attrInt("to", int64(out.Elem))))
	}
	gr = gr.Str(2, "tiny_"+g.Kind)
	for _, in := range g.Inputs {
		gr = gr.Bytes(11, valueInfo(in))
	}
	for _, out := range g.Outputs {
		gr = gr.Bytes(12, valueInfo(out))
	}
	m := PB(nil).Varint(1, 8)                        // ir_version
	m = m.Bytes(8, PB(nil).Str(1, "").Varint(2, 17)) // opset 17
	m = m.Str(2, "hidiffd-ort-test")                 // producer_name
	m = m.Bytes(7, gr)
	for k, v := range g.Meta {
		m = m.Bytes(14, PB(nil).Str(1, k).Str(2, v))
	}
	return m
}

// TempModel writes a model folder in a test's temporary folder and returns
// its path; edit, when not nil, changes the graphs before they are
// written.
func TempModel(t testing.TB, edit func(prior, transformer *Graph)) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteModel(dir, edit); err != nil {
		t.Fatal(err)
	}
	return dir
}
