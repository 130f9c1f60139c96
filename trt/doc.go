// Package trt is the TensorRT backend: one model's prior and transformer
// engines on one NVIDIA GPU, behind deblur.Backend. The Go side talks to a
// C++ shim through a C ABI of our own (hidiff_trt.h); the shim opens
// libnvinfer, libnvonnxparser and libcuda.so.1 with dlopen at run time, so
// the binary starts on machines without them. The shim is compiled in only
// with the build tag `tensorrt` (cabi_tensorrt.go); without it every entry
// returns ErrNotBuilt (cabi_none.go).
//
// Besides running engines (runtime.go, backend.go, all calls on one locked
// OS thread: worker.go) it builds them from the model's ONNX files
// (build.go, with the FP16 plan of recipe.go) and keeps them in a cache
// keyed by everything an engine depends on (cache.go). Its tests drive the
// Go side against a fake of the ABI (internal/fakeabi). See
// docs/ARCHITECTURE.md, "Backends".
package trt
