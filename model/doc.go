// Package model is what a model folder is: the ONNX contract that
// prior.onnx, transformer.onnx and transformer.fp16.onnx are held to (input
// and output names, float32, [1,3,H,W] images with H and W dynamic, [1,T,C]
// priors), the metadata the exporter writes into them (deblur.ModelInfo),
// and a streaming reader of the ONNX files' headers, nodes and tensor types.
//
// It reads the files itself and needs no runtime library, so that every
// backend (ort: ONNX Runtime; trt: TensorRT) and every command holds the
// files to one contract without depending on another backend's runtime
// (internal/archtest enforces that neither this package nor trt reaches
// onnxruntime_go). docs/ARCHITECTURE.md, "ONNX contract", describes it.
package model
