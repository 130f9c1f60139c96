package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestBuildEngineWithoutTensorRT: the command parses its flags, checks the
// model, and then says what is missing; it never needs TensorRT to start.
func TestBuildEngineWithoutTensorRT(t *testing.T) {
	run := func(args ...string) (int, string) {
		cmd := exec.Command(hidiffdBin(t), append([]string{"build-engine"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		return exitCode(cmd.Run()), stderr.String()
	}
	if code, msg := run("--precision", "int8", "--model", t.TempDir()); code != 2 || !strings.Contains(msg, "want fp16 or fp32") {
		t.Errorf("bad precision: exit %d, %s", code, msg)
	}
	if code, msg := run("--tile", "3x", "--model", t.TempDir()); code != 2 {
		t.Errorf("bad tile: exit %d, %s", code, msg)
	}
	if code, msg := run("--model", t.TempDir()); code != 1 || !strings.Contains(msg, "no such file") {
		t.Errorf("empty model folder: exit %d, %s", code, msg)
	}
	modelDir, _ := testModel(t)
	code, msg := run("--model", modelDir, "--engine-dir", t.TempDir(), "--tile", "64x64")
	if code != 1 || !strings.Contains(msg, "rebuild with -tags tensorrt") {
		t.Errorf("without TensorRT: exit %d, %s", code, msg)
	}
}
