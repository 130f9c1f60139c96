// Package deblur is the model in Go terms: it pads, tiles, seeds the starting
// noise, calls the prior and then the transformer through a Backend, blends
// the tiles and crops. It knows nothing about files or devices.
package deblur

import (
	"context"
	"errors"
	"fmt"
)

// Tensor is a dense float32 array in row-major order. Images are NCHW with
// N=1 and C=3; priors and noise are [1, PriorTokens, PriorChannels].
type Tensor struct {
	Shape []int64
	Data  []float32
}

// NewTensor allocates a zeroed tensor of the given shape.
func NewTensor(shape ...int64) Tensor {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return Tensor{Shape: append([]int64(nil), shape...), Data: make([]float32, n)}
}

// Len is the number of elements the shape implies.
func (t Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= int(d)
	}
	return n
}

// Validate reports a tensor whose data length does not match its shape.
func (t Tensor) Validate() error {
	if t.Len() != len(t.Data) {
		return fmt.Errorf("tensor shape %v needs %d values, has %d", t.Shape, t.Len(), len(t.Data))
	}
	return nil
}

// ModelInfo is what the exported graphs say about themselves (ONNX
// metadata_props). The Go side reads these instead of hard-coding model facts.
type ModelInfo struct {
	Model         string // "HI-Diff"
	Version       string // model release / export version
	Preset        string // "gopro", "realblur", "s", ...
	Timesteps     int    // T, reverse diffusion steps baked into prior.onnx
	PadMultiple   int    // H and W must be multiples of this
	PriorTokens   int    // 16
	PriorChannels int    // 256
	WeightsSHA256 string
	TrainingData  string
}

// Backend is one loaded model on one device. Implementations: ort (ONNX
// Runtime, CPU) and trt (TensorRT). Calls are not required to be safe for
// concurrent use; the pipeline serialises them. A backend must not keep its
// input tensors after a call returns: the pipeline refills them for the next
// tile. The returned tensor belongs to the caller.
type Backend interface {
	// Name is a short label for logs and metrics ("onnxruntime", "tensorrt").
	Name() string
	// Info describes the loaded model.
	Info() ModelInfo
	// Prior runs the latent diffusion prior: blur [1,3,H,W] and noise
	// [1,PriorTokens,PriorChannels] in, prior [1,PriorTokens,PriorChannels] out.
	Prior(ctx context.Context, blur, noise Tensor) (Tensor, error)
	// Transform runs the guided Restormer: blur [1,3,H,W] and prior in,
	// sharp [1,3,H,W] out. H and W are already padded to PadMultiple.
	Transform(ctx context.Context, blur, prior Tensor) (Tensor, error)
	// Close frees the backend; a second Close is harmless.
	Close() error
}

// GPUBackend is implemented by backends whose network runs on a GPU
// (TensorRT). The daemon asks the GPU throttle policy before each tile only
// for these: a CPU backend is not held back by a hot or busy GPU it does not
// use.
type GPUBackend interface {
	Backend
	UsesGPU() bool
}

// ErrOutOfMemory is what a backend wraps (fmt.Errorf("...: %w",
// ErrOutOfMemory)) when the device could not allocate for a call: a CUDA or
// TensorRT allocation failure, not the host running out. The pipeline then
// retries the frame with smaller tiles (Options.MinTile). ONNX Runtime on
// the CPU rarely reports it; GPU backends will.
var ErrOutOfMemory = errors.New("out of device memory")

// IsOutOfMemory reports whether err is, or wraps, ErrOutOfMemory.
func IsOutOfMemory(err error) bool { return errors.Is(err, ErrOutOfMemory) }
