package model

import (
	"os"
	"path/filepath"
	"testing"

	"hidiffd/internal/tinyonnx"
)

// TestHeaderTruncated feeds every prefix of a small model to ReadHeader: it
// must fail cleanly (or read a shorter header), never panic or hang.
func TestHeaderTruncated(t *testing.T) {
	full, err := os.ReadFile(filepath.Join(tinyonnx.TempModel(t, nil), TransformerFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cut.onnx")
	failures := 0
	for n := 0; n < len(full); n++ {
		if err := os.WriteFile(path, full[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadHeader(path); err != nil {
			failures++
		}
	}
	if failures == 0 {
		t.Error("no truncated file was rejected")
	}
	if _, err := ReadHeader(path + ".missing"); err == nil {
		t.Error("a missing file was read")
	}
}
