package ort

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
// (DESIGN.md) fixes them.
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
// [1,16,256] priors) and reads their metadata. It is the part of Open that
// needs no library; every error names the file at fault.
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
		h, err := readHeader(paths[i])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", paths[i], err)
		}
		spec.file = paths[i] // name the file with its folder in messages
		if err := checkIO(spec, h.inputs, h.outputs, &ps); err != nil {
			return nil, err
		}
		metas[i] = graphMeta{file: paths[i], kv: h.meta}
		m.Metadata[i] = maps.Clone(h.meta)
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
// streams the file like readHeader, skipping weights; Constant nodes,
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
