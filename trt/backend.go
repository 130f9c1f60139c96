package trt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"hidiffd/deblur"
	"hidiffd/model"
)

// ErrEngineMismatch means an engine deserialised but does not fit the ONNX
// contract, the model or the profile the daemon needs: rebuild it.
var ErrEngineMismatch = errors.New("engine does not match the model")

// Backend is one model's two engines on one GPU; it implements
// deblur.Backend. Calls are serialised on the runtime's worker thread, and
// a call in flight cannot be cancelled (a tile's GPU work is short); the
// context is checked before each one.
type Backend struct {
	rt          *Runtime
	prior       *Engine
	transformer *Engine
	info        deblur.ModelInfo
	entry       *Entry

	mu     sync.Mutex
	closed bool
}

var _ deblur.GPUBackend = (*Backend)(nil)

// OpenEntry loads a cache entry's two engines through rt and checks them
// against the ONNX contract, the model's prior shape and the profile. On
// success the Backend owns rt (its Close closes rt); on failure rt stays
// the caller's, open, and the error is StatusDeserialize or
// ErrEngineMismatch when a rebuild would help.
func OpenEntry(rt *Runtime, m *model.Model, e *Entry, need Profile) (*Backend, error) {
	b := &Backend{rt: rt, info: m.Info, entry: e}
	ok := false
	defer func() {
		if !ok {
			for _, eng := range []*Engine{b.prior, b.transformer} {
				if eng != nil {
					eng.Close()
				}
			}
		}
	}()
	for _, g := range []struct {
		file string
		io   model.GraphIO
		dst  **Engine
	}{{PriorEngine, model.PriorIO, &b.prior}, {TransformerEngine, model.TransformerIO, &b.transformer}} {
		plan, err := e.ReadEngine(g.file)
		if err != nil {
			return nil, fmt.Errorf("trt: %w: %v", ErrEngineMismatch, err)
		}
		eng, err := rt.LoadEngine(plan)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path(g.file), err)
		}
		*g.dst = eng
		if err := checkEngine(g.io, eng.Tensors(), m.Info, need); err != nil {
			return nil, fmt.Errorf("trt: %s: %w: %v", e.Path(g.file), ErrEngineMismatch, err)
		}
		if err := eng.Bind(g.io.Inputs[0], g.io.Inputs[1], g.io.Output); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path(g.file), err)
		}
	}
	ok = true
	return b, nil
}

// checkEngine holds an engine's I/O to the contract: the graph's two input
// names and its output, float32, linear; images [1,3,H,W] whose profile
// covers need; priors [1,T,C] of the model's T and C.
func checkEngine(g model.GraphIO, ts []TensorDesc, info deblur.ModelInfo, need Profile) error {
	byName := map[string]TensorDesc{}
	var inputs []string
	for _, t := range ts {
		byName[t.Name] = t
		if t.Input {
			inputs = append(inputs, t.Name)
		}
	}
	if len(inputs) != 2 {
		return fmt.Errorf("inputs %v, the contract wants %s and %s", inputs, g.Inputs[0], g.Inputs[1])
	}
	prior := []int64{1, int64(info.PriorTokens), int64(info.PriorChannels)}
	for k, name := range []string{g.Inputs[0], g.Inputs[1], g.Output} {
		t, ok := byName[name]
		switch {
		case !ok:
			return fmt.Errorf("no tensor %q", name)
		case t.Input != (k < 2):
			io := map[bool]string{true: "input", false: "output"}
			return fmt.Errorf("tensor %q is an %s, the contract wants an %s (engines swapped?)", name, io[t.Input], io[k < 2])
		case t.DType != DTFloat || !t.Linear:
			return fmt.Errorf("tensor %q is %s (linear %v), the contract wants linear float32", name, t.DType, t.Linear)
		}
		image := name == "blur" || name == "sharp"
		if image {
			if len(t.Dims) != 4 || !fits(t.Dims[0], 1) || !fits(t.Dims[1], 3) {
				return fmt.Errorf("tensor %q has shape %v, the contract wants [1 3 H W]", name, t.Dims)
			}
			if t.Input {
				lo, hi := t.ProfileMin, t.ProfileMax
				if len(lo) != 4 || len(hi) != 4 || lo[2] > int64(need.Min.H) || lo[3] > int64(need.Min.W) ||
					hi[2] < int64(need.Max.H) || hi[3] < int64(need.Max.W) || lo[0] > 1 || hi[0] < 1 {
					return fmt.Errorf("input %q accepts %v..%v, the configured tiles need H x W in %s..%s",
						name, lo, hi, need.Min, need.Max)
				}
			}
			continue
		}
		if len(t.Dims) != 3 || !fits(t.Dims[0], prior[0]) || !fits(t.Dims[1], prior[1]) || !fits(t.Dims[2], prior[2]) {
			return fmt.Errorf("tensor %q has shape %v, the model wants %v", name, t.Dims, prior)
		}
		if t.Input && (!contains(t.ProfileMin, t.ProfileMax, prior)) {
			return fmt.Errorf("input %q accepts %v..%v, the model needs %v", name, t.ProfileMin, t.ProfileMax, prior)
		}
	}
	return nil
}

// fits: a fixed dimension must equal want; a dynamic one (-1) may be fed it.
func fits(d, want int64) bool { return d < 0 || d == want }

func contains(lo, hi, s []int64) bool {
	if len(lo) != len(s) || len(hi) != len(s) {
		return false
	}
	for i := range s {
		if s[i] < lo[i] || s[i] > hi[i] {
			return false
		}
	}
	return true
}

// Name implements deblur.Backend.
func (b *Backend) Name() string { return "tensorrt" }

// UsesGPU implements deblur.GPUBackend: the daemon's GPU throttle gates
// this backend's tiles.
func (b *Backend) UsesGPU() bool { return true }

// Info implements deblur.Backend.
func (b *Backend) Info() deblur.ModelInfo { return b.info }

// Device describes the GPU and TensorRT in use.
func (b *Backend) Device() DeviceInfo { return b.rt.Device() }

// Entry is the cache entry the engines came from.
func (b *Backend) Entry() *Entry { return b.entry }

// Precision is the transformer engine's ("fp16" or "fp32").
func (b *Backend) Precision() string { return b.entry.Sidecar.Key.Precision }

// Prior implements deblur.Backend.
func (b *Backend) Prior(ctx context.Context, blur, noise deblur.Tensor) (deblur.Tensor, error) {
	if err := b.checkImage("Prior", "blur", blur); err != nil {
		return deblur.Tensor{}, err
	}
	if err := b.checkPrior("Prior", "noise", noise); err != nil {
		return deblur.Tensor{}, err
	}
	return b.run(ctx, b.prior, blur, noise)
}

// Transform implements deblur.Backend.
func (b *Backend) Transform(ctx context.Context, blur, prior deblur.Tensor) (deblur.Tensor, error) {
	if err := b.checkImage("Transform", "blur", blur); err != nil {
		return deblur.Tensor{}, err
	}
	if err := b.checkPrior("Transform", "prior", prior); err != nil {
		return deblur.Tensor{}, err
	}
	return b.run(ctx, b.transformer, blur, prior)
}

func (b *Backend) run(ctx context.Context, e *Engine, x0, x1 deblur.Tensor) (deblur.Tensor, error) {
	if err := ctx.Err(); err != nil {
		return deblur.Tensor{}, fmt.Errorf("trt: not started: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return deblur.Tensor{}, ErrClosed
	}
	var out deblur.Tensor
	shape, err := e.Infer(x0.Shape, x0.Data, x1.Shape, x1.Data, func(shape []int64) []float32 {
		out = deblur.NewTensor(shape...)
		return out.Data
	})
	if err != nil {
		if isOOM(err) {
			// The pipeline retries the frame with smaller tiles.
			return deblur.Tensor{}, fmt.Errorf("%w: %w", deblur.ErrOutOfMemory, err)
		}
		return deblur.Tensor{}, err
	}
	out.Shape = shape
	return out, nil
}

// isOOM: the shim's own allocation failures, and CUDA's or TensorRT's
// out-of-memory reports in an error's text (an enqueue that could not
// allocate its scratch space reports itself only in words).
func isOOM(err error) bool {
	if StatusOf(err) == StatusNoMem {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "out_of_memory") || strings.Contains(msg, "out of memory")
}

// Close frees both engines, the TensorRT runtime and the CUDA context. A
// second Close does nothing; later calls return ErrClosed.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return b.rt.Close() // closes the engines first
}

// Describe is a one-line summary for logs.
func (b *Backend) Describe() string {
	d := b.Device()
	parts := []string{"TensorRT " + d.TensorRT, d.GPU + " (sm " + d.ComputeCapability + ")", b.Precision(),
		"profile " + b.entry.Sidecar.Key.Profile.String()}
	if d.ZeroCopy {
		parts = append(parts, "zero-copy I/O")
	}
	return strings.Join(parts, ", ")
}

// checkImage and checkPrior put the shared contract checks of deblur.ModelInfo
// in this backend's words.
func (b *Backend) checkImage(call, name string, t deblur.Tensor) error {
	if err := b.info.CheckImage(name, t); err != nil {
		return fmt.Errorf("trt: %s: %w", call, err)
	}
	return nil
}

func (b *Backend) checkPrior(call, name string, t deblur.Tensor) error {
	if err := b.info.CheckPrior(name, t); err != nil {
		return fmt.Errorf("trt: %s: %w", call, err)
	}
	return nil
}
