package model

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"

	"hidiffd/deblur"
)

// Model is what a model folder's two ONNX files say about themselves, read
// without ONNX Runtime: the other backends (TensorRT builds its engines
// from the same files) hold the files to the same contract and take the
// same metadata.
type Model struct {
	Dir             string
	PriorPath       string
	TransformerPath string
	Info            deblur.ModelInfo
	// Metadata holds each graph's metadata_props (prior, transformer).
	Metadata [2]map[string]string
}

// GraphIO names one graph's two inputs and its output, as the ONNX contract
// (docs/ARCHITECTURE.md) fixes them.
type GraphIO struct {
	File   string // file name in the model folder
	Inputs [2]string
	Output string
}

// PriorIO and TransformerIO are the contract's two rows.
var (
	PriorIO       = graphIO(priorSpec)
	TransformerIO = graphIO(transformerSpec)
)

func graphIO(s graphSpec) GraphIO {
	return GraphIO{File: s.file, Inputs: [2]string{s.inputs[0].name, s.inputs[1].name}, Output: s.output.name}
}

// Inspect checks modelDir/prior.onnx and modelDir/transformer.onnx against
// the ONNX contract (names, float32, [1,3,H,W] with H and W dynamic,
// [1,16,256] priors) and reads their metadata. It needs no runtime: the
// backends call it before they load anything (ort.Open, trt), and `hidiffd
// doctor` and a configuration reload call it alone. Every error names the
// file at fault.
func Inspect(modelDir string) (*Model, error) {
	m := &Model{
		Dir:             modelDir,
		PriorPath:       filepath.Join(modelDir, PriorFile),
		TransformerPath: filepath.Join(modelDir, TransformerFile),
	}
	paths := []string{m.PriorPath, m.TransformerPath}
	// Model files first, so that a wrong folder is reported as just that.
	for _, p := range paths {
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("model file %s: no such file (export the model with engine_build, or `make models`)", p)
		case err != nil:
			return nil, fmt.Errorf("model file %s: %w", p, err)
		case !st.Mode().IsRegular():
			return nil, fmt.Errorf("model file %s: not a regular file", p)
		}
	}
	var ps priorShape
	var metas [2]graphMeta
	for i, spec := range []graphSpec{priorSpec, transformerSpec} {
		h, err := ReadHeader(paths[i])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", paths[i], err)
		}
		spec.file = paths[i] // name the file with its folder in messages
		if err := checkIO(spec, h.Inputs, h.Outputs, &ps); err != nil {
			return nil, err
		}
		metas[i] = graphMeta{file: paths[i], kv: h.Metadata}
		m.Metadata[i] = maps.Clone(h.Metadata)
	}
	var err error
	if m.Info, err = modelInfo(metas[0], metas[1], ps); err != nil {
		return nil, err
	}
	return m, nil
}

// Node is one ONNX graph node, as much as the TensorRT engine builder needs
// to find the layers it must keep in FP32.
type Node struct {
	Name    string // as the ONNX parser names its layers: the node name, or "node_of_<first output>"
	OpType  string
	Inputs  []string
	Outputs []string
}

// Field numbers from onnx.proto.
const (
	graphNode  = 1
	nodeInput  = 1
	nodeOutput = 2
	nodeName   = 3
	nodeOpType = 4
)

// ReadNodes lists the top-level nodes of an ONNX file's graph in order. It
// streams the file like ReadHeader, skipping weights; Constant nodes,
// whose attributes may hold large tensors, are listed without reading
// their attributes.
func ReadNodes(path string) ([]Node, error) {
	f, r, size, err := openProto(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var nodes []Node
	err = r.message(size, func(field, wire int, n int64) error {
		if field != modelGraph || wire != 2 {
			return r.skip(wire, n)
		}
		return r.message(n, func(field, wire int, n int64) error {
			if field != graphNode || wire != 2 {
				return r.skip(wire, n)
			}
			var nd Node
			err := r.message(n, func(field, wire int, n int64) error {
				if wire != 2 || field < nodeInput || field > nodeOpType {
					return r.skip(wire, n) // attributes, doc strings, domain
				}
				b, err := r.small(n)
				if err != nil {
					return err
				}
				switch field {
				case nodeInput:
					nd.Inputs = append(nd.Inputs, string(b))
				case nodeOutput:
					nd.Outputs = append(nd.Outputs, string(b))
				case nodeName:
					nd.Name = string(b)
				case nodeOpType:
					nd.OpType = string(b)
				}
				return nil
			})
			if err != nil {
				return err
			}
			// TensorRT's ONNX parser names the layers of an unnamed node
			// after its first output (onnx-tensorrt getNodeName).
			if nd.Name == "" && len(nd.Outputs) > 0 {
				nd.Name = "node_of_" + nd.Outputs[0]
			}
			nodes = append(nodes, nd)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%s: not an ONNX model: %w", path, err)
	}
	return nodes, nil
}

// ErrNoMixed means a model folder has no float16 transformer graph.
var ErrNoMixed = errors.New("no float16 transformer graph")

// Mixed describes a model folder's transformer.fp16.onnx: the transformer
// rewritten by engine_build/precision.py with float16 weights and
// activations and float32 islands (layer norms, softmax, the L2 norms of
// channel attention), float32 at its inputs and output.
type Mixed struct {
	Path         string
	Metadata     map[string]string
	SourceSHA256 string // sha256 of the transformer.onnx it was rewritten from
	Islands      string // what stayed float32, as the rewrite counted it
}

// MixedFix says how to make or remake the float16 graph of a folder.
func MixedFix(dir string) string {
	return fmt.Sprintf("write it with `python3 -m engine_build.precision mixed %s` (or re-export the model: "+
		"`python3 -m engine_build.export ... --precision fp16`)", dir)
}

// InspectMixed checks m's float16 transformer graph against the ONNX
// contract (the same inputs and output as transformer.onnx, float32) and
// its metadata against transformer.onnx's (precision fp16, the same preset
// and weights). ErrNoMixed (wrapped, with the fix) when there is none.
// Whether it was rewritten from the transformer.onnx beside it is for the
// caller to compare (SourceSHA256), who hashes that file anyway.
func InspectMixed(m *Model) (*Mixed, error) {
	path := filepath.Join(m.Dir, MixedFile)
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s does not exist; %s", ErrNoMixed, path, MixedFix(m.Dir))
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	h, err := ReadHeader(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	spec := transformerSpec
	spec.file = path
	if err := checkIO(spec, h.Inputs, h.Outputs, &priorShape{}); err != nil {
		return nil, err
	}
	mm := graphMeta{file: path, kv: h.Metadata}
	tm := graphMeta{file: m.TransformerPath, kv: m.Metadata[1]}
	if p := mm.str(keyPrecision); p != "fp16" {
		return nil, fmt.Errorf("%s: metadata %q = %q, expected \"fp16\"; %s", path, keyPrecision, p, MixedFix(m.Dir))
	}
	for _, key := range []string{keyGraph, keyPreset, keyWeightsSHA256} {
		if a, b := mm.str(key), tm.str(key); a != b {
			return nil, fmt.Errorf("%s has %s %q but %s has %q: not rewritten from it; %s", path, key, a, tm.file, b, MixedFix(m.Dir))
		}
	}
	return &Mixed{Path: path, Metadata: maps.Clone(h.Metadata), SourceSHA256: mm.str(keySourceSHA256), Islands: mm.str(keyIslands)}, nil
}

// Element types of ONNX tensors (TensorProto.DataType; ONNX Runtime's
// element type enum shares the numbering).
const (
	ElemFloat   = int32(1)
	ElemFloat16 = int32(10)
)

// Field number of GraphProto.value_info.
const graphValueInfo = 13

// ReadTypes returns the element type of every tensor an ONNX file's graph
// declares a type for: its inputs, outputs and value_info (the float16
// export writes value_info for every node output). It streams the file
// like ReadHeader, skipping weights.
func ReadTypes(path string) (map[string]int32, error) {
	f, r, size, err := openProto(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	types := map[string]int32{}
	err = r.message(size, func(field, wire int, n int64) error {
		if field != modelGraph || wire != 2 {
			return r.skip(wire, n)
		}
		return r.message(n, func(field, wire int, n int64) error {
			if wire != 2 || (field != graphInput && field != graphOutput && field != graphValueInfo) {
				return r.skip(wire, n)
			}
			info, err := r.valueInfo(n)
			if err == nil && info.Kind == KindTensor {
				types[info.Name] = info.Elem
			}
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%s: not an ONNX model: %w", path, err)
	}
	return types, nil
}

// ComputeType is the element type node n computes in, as the graph's types
// say: that of its first floating-point output, or 0 (shape arithmetic, or
// no type declared).
func ComputeType(n Node, types map[string]int32) int32 {
	for _, o := range n.Outputs {
		if t := types[o]; t == ElemFloat || t == ElemFloat16 {
			return t
		}
	}
	return 0
}
