package ort

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	onnx "github.com/yalue/onnxruntime_go"

	"hidiffd/internal/tinyonnx"
	"hidiffd/model"
)

// fromORT puts ONNX Runtime's description of a graph's inputs or outputs
// in model's terms; model.Kind and the element types share ORT's numbering.
func fromORT(infos []onnx.InputOutputInfo) []model.TensorInfo {
	var out []model.TensorInfo
	for _, in := range infos {
		ti := model.TensorInfo{Name: in.Name, Kind: model.Kind(in.OrtValueType), Elem: int32(in.DataType)}
		if in.Dimensions != nil {
			ti.Dims = []int64(in.Dimensions)
		}
		out = append(out, ti)
	}
	return out
}

// TestHeaderMatchesORT holds model.ReadHeader, which the contract check
// uses instead of ONNX Runtime, to what ONNX Runtime itself reports for
// the same files: the tiny test graphs and, when exported, the real ones.
func TestHeaderMatchesORT(t *testing.T) {
	opts := testOptions(t)
	if _, _, err := ensureEnv(opts.LibraryPath); err != nil {
		t.Fatal(err)
	}
	dirs := []string{tinyonnx.TempModel(t, func(p, tr *tinyonnx.Graph) {
		// Unusual but legal: an extra output and a dynamic batch.
		tr.Outputs = append(tr.Outputs, tinyonnx.IO{Name: "extra", Elem: tinyonnx.Double, Dims: []any{1, 3, "H", "W"}})
		p.Inputs[1].Dims = []any{"N", 16, 256}
	})}
	if root := findModelsRoot(); root != "" {
		for _, preset := range []string{"s", "gopro", "realblur"} {
			if testing.Short() && preset != "s" {
				continue // ORT's throwaway sessions for the big graphs take ~10 s
			}
			if dir := filepath.Join(root, preset); isFile(filepath.Join(dir, model.PriorFile)) {
				dirs = append(dirs, dir)
			}
		}
	}
	for _, dir := range dirs {
		for _, name := range []string{model.PriorFile, model.TransformerFile} {
			path := filepath.Join(dir, name)
			h, err := model.ReadHeader(path)
			if err != nil {
				t.Fatalf("ReadHeader(%s): %v", path, err)
			}
			ins, outs, err := onnx.GetInputOutputInfo(path)
			if err != nil {
				t.Fatalf("ORT on %s: %v", path, err)
			}
			if ort := fromORT(ins); !reflect.DeepEqual(h.Inputs, ort) {
				t.Errorf("%s inputs:\n ours %v\n  ORT %v", path, h.Inputs, ort)
			}
			if ort := fromORT(outs); !reflect.DeepEqual(h.Outputs, ort) {
				t.Errorf("%s outputs:\n ours %v\n  ORT %v", path, h.Outputs, ort)
			}
			md, err := onnx.GetModelMetadata(path)
			if err != nil {
				t.Fatal(err)
			}
			keys, err := md.GetCustomMetadataMapKeys()
			if err != nil {
				t.Fatal(err)
			}
			meta := map[string]string{}
			for _, k := range keys {
				v, _, err := md.LookupCustomMetadataMap(k)
				if err != nil {
					t.Fatal(err)
				}
				meta[k] = v
			}
			md.Destroy()
			if !reflect.DeepEqual(h.Metadata, meta) {
				t.Errorf("%s metadata:\n ours %v\n  ORT %v", path, h.Metadata, meta)
			}
			t.Logf("%s: inputs %v; outputs %v; %d metadata keys", path, h.Inputs, h.Outputs, len(h.Metadata))
		}
	}
}

// TestNamesMatchORT: the contract's messages name kinds and element types
// as ONNX Runtime does ("is a ONNX_TYPE_SEQUENCE", "element type DOUBLE"),
// as they did when the check took ORT's types.
func TestNamesMatchORT(t *testing.T) {
	for k := onnx.ONNXType(onnx.ONNXTypeUnknown); k <= onnx.ONNXTypeOptional+1; k++ {
		if got, want := model.Kind(k).String(), k.String(); got != want {
			t.Errorf("kind %d: %q, ORT says %q", int(k), got, want)
		}
	}
	for e := onnx.TensorElementDataType(onnx.TensorElementDataTypeUndefined); e <= onnx.TensorElementDataTypeInt4+1; e++ {
		want := strings.TrimPrefix(e.String(), "ONNX_TENSOR_ELEMENT_DATA_TYPE_")
		if e == onnx.TensorElementDataTypeFloat {
			want = "float32"
		}
		info := model.TensorInfo{Name: "x", Kind: model.KindTensor, Elem: int32(e), Dims: []int64{1, -1}}
		if got, want := info.String(), "x [1 ?] "+want; got != want {
			t.Errorf("element type %d: %q, want %q", int(e), got, want)
		}
	}
}
