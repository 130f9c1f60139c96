package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/trt"
)

// TestBackendFlagRefusals: `deblur` and `eval` refuse a backend they cannot
// run before any image is read, naming the flag; without TensorRT built in,
// --backend tensorrt says so and how to get a binary that has it.
func TestBackendFlagRefusals(t *testing.T) {
	bin := hidiffdBin(t)
	// Inputs that do not exist: a command that looked at them before its
	// flags would say so instead.
	commands := map[string][]string{
		"deblur": {"deblur", "--out", t.TempDir(), "missing.jpg"},
		"eval":   {"eval", "--pairs", filepath.Join(t.TempDir(), "missing-pairs")},
	}
	cases := []struct {
		name    string
		flags   []string
		want    []string
		skipTRT bool // only meaningful in a binary without TensorRT
	}{
		{"tensorrt without TensorRT", []string{"--backend", "tensorrt"},
			[]string{"--backend tensorrt: this hidiffd binary was built without TensorRT", "make build-tensorrt", "-tags tensorrt"}, true},
		{"unknown backend", []string{"--backend", "cuda"}, []string{`--backend "cuda": want onnxruntime, tensorrt or auto`}, false},
		{"unknown precision", []string{"--backend", "auto", "--precision", "int8"}, []string{`--precision "int8": want fp16 or fp32`}, false},
	}
	for cmdName, base := range commands {
		for _, c := range cases {
			t.Run(cmdName+"/"+c.name, func(t *testing.T) {
				if c.skipTRT && trt.Available() == nil {
					t.Skip("this test binary has TensorRT")
				}
				var stderr bytes.Buffer
				cmd := exec.Command(bin, append(append([]string{}, base...), c.flags...)...)
				cmd.Stderr = &stderr
				code := exitCode(cmd.Run())
				if code != 2 {
					t.Errorf("exit %d, want 2 (usage); stderr %s", code, stderr.String())
				}
				for _, w := range c.want {
					if !strings.Contains(stderr.String(), w) {
						t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
					}
				}
				if strings.Contains(stderr.String(), "missing") {
					t.Errorf("the inputs were looked at before the flags were checked:\n%s", stderr.String())
				}
			})
		}
	}
}
