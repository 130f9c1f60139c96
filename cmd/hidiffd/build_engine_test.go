package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/config"
	"hidiffd/trt"
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

// TestDoctorSaysTheEnginePath: doctor names the path engines take for the
// shipped model on each TensorRT major (the device as a TensorRT shim
// reports it; no TensorRT here), and what is missing when there is none.
func TestDoctorSaysTheEnginePath(t *testing.T) {
	shipped := filepath.Join("..", "..", "models", "default")
	for _, c := range []struct {
		name      string
		version   string
		modes     int
		precision string
		want      string
	}{
		{"TensorRT 8 weak fp16", "8.6.2", trt.CanWeak, "fp16", "ok    tensorrt engines (backend.precision = \"fp16\"): weakly typed (TensorRT 8.x), transformer FP16 from transformer.onnx with the nodes that stay float32 in transformer.fp16.onnx pinned to FP32"},
		{"TensorRT 10 strong fp16", "10.3.0", trt.CanWeak | trt.CanStrong, "fp16", "ok    tensorrt engines (backend.precision = \"fp16\"): strongly typed, transformer FP16 from transformer.fp16.onnx (float16, float32 islands: LayerNormalization 40, ReduceL2 26, Softmax 20, L2 normalisation 26"},
		{"TensorRT 11 strong fp32", "11.1.0", trt.CanStrong, "fp32", "ok    tensorrt engines (backend.precision = \"fp32\"): strongly typed, transformer FP32 from transformer.onnx (TF32 off)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			r := &doctorReport{w: &out}
			cfg := config.Default()
			cfg.Model.Dir, cfg.Backend.Precision = shipped, c.precision
			doctorEnginePlan(r, cfg, trt.DeviceInfo{TensorRT: c.version, GPU: "g", ComputeCapability: "8.7", TypingModes: c.modes})
			if !strings.Contains(out.String(), c.want) || r.problems != 0 {
				t.Errorf("TensorRT %s:\n%s\nwant %s", c.version, out.String(), c.want)
			}
		})
	}
	// A model folder without its float16 graph: FP16 engines cannot be
	// built, and doctor says how to make the graph.
	dir := t.TempDir()
	for _, f := range []string{"prior.onnx", "transformer.onnx"} {
		b, err := os.ReadFile(filepath.Join(shipped, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	var out bytes.Buffer
	r := &doctorReport{w: &out}
	cfg := config.Default()
	cfg.Model.Dir, cfg.Backend.Kind = dir, "tensorrt"
	doctorEnginePlan(r, cfg, trt.DeviceInfo{TensorRT: "11.1.0", GPU: "g", ComputeCapability: "8.7", TypingModes: trt.CanStrong})
	if r.problems != 1 || !strings.Contains(out.String(), "python3 -m engine_build.precision mixed "+dir) {
		t.Errorf("no float16 graph:\n%s", out.String())
	}
}
