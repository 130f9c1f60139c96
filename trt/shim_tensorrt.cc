//go:build tensorrt

// The TensorRT shim and its CUDA driver layer, compiled into package trt by
// cgo only with the build tag `tensorrt` (cgo compiles the .cc files of a
// package's own folder, not of shim/, hence this one-file wrapper).
#include "shim/cuda_driver.cc"
#include "shim/hidiff_trt.cc"
