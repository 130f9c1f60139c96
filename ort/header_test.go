package ort

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	onnx "github.com/yalue/onnxruntime_go"
)

// TestHeaderMatchesORT holds readHeader to what ONNX Runtime itself reports
// for the same files: the tiny test graphs and, when exported, the real ones.
func TestHeaderMatchesORT(t *testing.T) {
	opts := testOptions(t)
	if _, _, err := ensureEnv(opts.LibraryPath); err != nil {
		t.Fatal(err)
	}
	dirs := []string{writeTinyModel(t, func(p, tr *tinyGraph) {
		// Unusual but legal: an extra output and a dynamic batch.
		tr.Outputs = append(tr.Outputs, tinyIO{Name: "extra", Elem: onnxDouble, Dims: []any{1, 3, "H", "W"}})
		p.Inputs[1].Dims = []any{"N", 16, 256}
	})}
	if root := findModelsRoot(); root != "" {
		for _, preset := range []string{"s", "gopro", "realblur"} {
			if testing.Short() && preset != "s" {
				continue // ORT's throwaway sessions for the big graphs take ~10 s
			}
			if dir := filepath.Join(root, preset); isFile(filepath.Join(dir, PriorFile)) {
				dirs = append(dirs, dir)
			}
		}
	}
	for _, dir := range dirs {
		for _, name := range []string{PriorFile, TransformerFile} {
			path := filepath.Join(dir, name)
			h, err := readHeader(path)
			if err != nil {
				t.Fatalf("readHeader(%s): %v", path, err)
			}
			ins, outs, err := onnx.GetInputOutputInfo(path)
			if err != nil {
				t.Fatalf("ORT on %s: %v", path, err)
			}
			if !reflect.DeepEqual(h.inputs, ins) {
				t.Errorf("%s inputs:\n ours %v\n  ORT %v", path, h.inputs, ins)
			}
			if !reflect.DeepEqual(h.outputs, outs) {
				t.Errorf("%s outputs:\n ours %v\n  ORT %v", path, h.outputs, outs)
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
			if !reflect.DeepEqual(h.meta, meta) {
				t.Errorf("%s metadata:\n ours %v\n  ORT %v", path, h.meta, meta)
			}
			t.Logf("%s: inputs %s; outputs %s; %d metadata keys", path, describeIO(h.inputs), describeIO(h.outputs), len(h.meta))
		}
	}
}

// TestHeaderTruncated feeds every prefix of a small model to readHeader: it
// must fail cleanly (or read a shorter header), never panic or hang.
func TestHeaderTruncated(t *testing.T) {
	full, err := os.ReadFile(filepath.Join(writeTinyModel(t, nil), TransformerFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cut.onnx")
	failures := 0
	for n := 0; n < len(full); n++ {
		if err := os.WriteFile(path, full[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readHeader(path); err != nil {
			failures++
		}
	}
	if failures == 0 {
		t.Error("no truncated file was rejected")
	}
	if _, err := readHeader(path + ".missing"); err == nil {
		t.Error("a missing file was read")
	}
}
