package trt

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"unsafe"
)

// ErrNotBuilt is what every entry returns in a binary built without the
// tag `tensorrt`.
var ErrNotBuilt = errors.New("trt: built without TensorRT support (rebuild with -tags tensorrt)")

// ErrClosed is returned by calls on a closed Runtime, Engine or Backend.
var ErrClosed = errors.New("trt: closed")

// Available reports whether this binary carries the TensorRT shim. It
// loads nothing: a binary with the shim may still find no TensorRT or GPU
// at run time (OpenRuntime says which).
func Available() error {
	if shimAPI() == nil {
		return ErrNotBuilt
	}
	return nil
}

// Options choose the libraries and the device. The zero value is what the
// daemon wants on a machine with one GPU.
type Options struct {
	// Each a ':'-separated list of dlopen names or paths tried in order; ""
	// means libnvinfer.so.<major the shim was built for> (then the other
	// major, to report a mismatch by name), libnvonnxparser.so.<major> and
	// libcuda.so.1, found through the loader's search path.
	NvinferLibrary    string
	OnnxParserLibrary string
	CUDALibrary       string
	// Device is the CUDA device ordinal.
	Device int
	// Builder loads the ONNX parser too (needed by Build only).
	Builder bool
	// Log receives TensorRT's logger messages: level "error", "warn",
	// "info" or "debug". Warnings and errors only, unless Verbose.
	Log     func(level, msg string)
	Verbose bool
	// Progress, when set, receives every kept message as a line the moment
	// TensorRT logs it, from inside a long call (the engine build): the
	// build-engine child writes them to its stderr for the daemon to log.
	Progress *os.File

	// api replaces the real shim's function table (tests: the fake ABI).
	api unsafe.Pointer
}

// Runtime is the loaded libraries, one CUDA device's primary context and a
// TensorRT runtime, served by one locked OS thread (worker.go). Engines
// loaded through it share that thread.
type Runtime struct {
	w    *worker
	a    *cabi
	opts Options
	dev  DeviceInfo

	// Touched only on the worker thread.
	h       rtHandle
	engines map[*Engine]struct{}

	closeOnce sync.Once
	closeErr  error
}

// OpenRuntime loads TensorRT and CUDA and opens the device. Errors say what
// is missing: ErrNotBuilt, a library (StatusLibrary), a TensorRT version
// the shim was not built for (StatusVersion), no GPU (StatusNoDevice).
func OpenRuntime(opts Options) (*Runtime, error) {
	p := opts.api
	if p == nil {
		if p = shimAPI(); p == nil {
			return nil, ErrNotBuilt
		}
	}
	a, err := newCABI(p)
	if err != nil {
		return nil, err
	}
	r := &Runtime{w: startWorker(), a: a, opts: opts, engines: map[*Engine]struct{}{}}
	sev := 2 // warnings and errors
	if opts.Verbose {
		sev = 3
	}
	spec := openSpec{nvinfer: opts.NvinferLibrary, parser: opts.OnnxParserLibrary, cuda: opts.CUDALibrary,
		device: opts.Device, needParser: opts.Builder, severity: sev, logFile: opts.Progress}
	var openErr error
	r.w.do(func() {
		r.h, openErr = a.open(spec)
		if openErr == nil {
			if r.dev, openErr = a.deviceInfo(r.h); openErr != nil {
				a.close(r.h)
				r.h = nil
			}
		}
		r.drainLog()
	})
	if openErr != nil {
		r.w.stop()
		a.free()
		return nil, openErr
	}
	return r, nil
}

// Device describes the GPU and the libraries in use.
func (r *Runtime) Device() DeviceInfo { return r.dev }

// call runs f on the worker with the runtime open, then forwards what
// TensorRT logged.
func (r *Runtime) call(f func() error) error {
	var err error
	if werr := r.w.do(func() {
		if r.h == nil {
			err = ErrClosed
			return
		}
		err = f()
		r.drainLog()
	}); werr != nil {
		return werr
	}
	return err
}

func (r *Runtime) drainLog() {
	if r.h == nil {
		return
	}
	r.a.drainLog(r.h, func(l logLine) {
		if r.opts.Log == nil {
			return
		}
		level := "debug"
		switch {
		case l.severity <= 1:
			level = "error"
		case l.severity == 2:
			level = "warn"
		case l.severity == 3:
			level = "info"
		}
		r.opts.Log(level, l.msg)
	})
}

// Close closes every engine still open, the TensorRT runtime and the CUDA
// context, then ends the worker thread. A second Close does nothing.
func (r *Runtime) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		r.w.do(func() {
			if r.h == nil {
				return
			}
			for e := range r.engines {
				if err := e.closeOnWorker(); err != nil {
					errs = append(errs, err)
				}
			}
			if err := r.a.close(r.h); err != nil {
				errs = append(errs, err)
			}
			r.drainLog()
			r.h = nil
		})
		r.w.stop()
		r.a.free()
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// Engine is one deserialised plan with its execution context, stream and
// I/O buffers. Its calls run on the runtime's worker thread.
type Engine struct {
	r       *Runtime
	tensors []TensorDesc

	// Touched only on the worker thread.
	h      engHandle
	bound  bool
	shapes [2][]int64 // last input shapes set
	outDim []int64
}

// LoadEngine deserialises a plan. A plan that TensorRT refuses (corrupt,
// another TensorRT version or GPU) is a StatusDeserialize error.
func (r *Runtime) LoadEngine(plan []byte) (*Engine, error) {
	e := &Engine{r: r}
	err := r.call(func() error {
		h, err := r.a.engineLoad(r.h, plan)
		if err != nil {
			return err
		}
		e.h = h
		if e.tensors, err = r.a.engineTensors(h); err != nil {
			e.closeOnWorker()
			return err
		}
		r.engines[e] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Tensors lists the engine's inputs and outputs.
func (e *Engine) Tensors() []TensorDesc { return slices.Clone(e.tensors) }

// Bind names the two inputs and the output that Infer feeds and fetches.
func (e *Engine) Bind(in0, in1, out string) error {
	return e.r.call(func() error {
		if e.h == nil {
			return ErrClosed
		}
		if err := e.r.a.engineBind(e.h, in0, in1, out); err != nil {
			return err
		}
		e.bound, e.shapes = true, [2][]int64{}
		return nil
	})
}

// Infer runs the engine on two inputs of the given shapes and writes the
// output into out, which must hold exactly the output's elements; it
// returns the output shape. The input shapes are set only when they differ
// from the last call's (tiles keep one shape).
func (e *Engine) Infer(d0 []int64, x0 []float32, d1 []int64, x1 []float32, out func(shape []int64) []float32) ([]int64, error) {
	var shape []int64
	err := e.r.call(func() error {
		if e.h == nil {
			return ErrClosed
		}
		if !e.bound {
			return &Error{Op: "engine_run", Status: StatusInvalid, Msg: "engine not bound"}
		}
		if !slices.Equal(d0, e.shapes[0]) || !slices.Equal(d1, e.shapes[1]) {
			e.shapes = [2][]int64{}
			od, err := e.r.a.engineSetShapes(e.h, d0, d1)
			if err != nil {
				return err
			}
			e.shapes, e.outDim = [2][]int64{slices.Clone(d0), slices.Clone(d1)}, od
		}
		shape = slices.Clone(e.outDim)
		buf := out(shape)
		if n := volume(shape); len(buf) != n {
			return &Error{Op: "engine_run", Status: StatusShape, Msg: fmt.Sprintf("output buffer has %d values, shape %v needs %d", len(buf), shape, n)}
		}
		return e.r.a.engineRun(e.h, x0, x1, buf)
	})
	return shape, err
}

func volume(shape []int64) int {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	return n
}

// Close frees the engine. A second Close does nothing.
func (e *Engine) Close() error {
	err := e.r.call(e.closeOnWorker)
	if errors.Is(err, ErrClosed) {
		return nil // the runtime closed it already
	}
	return err
}

func (e *Engine) closeOnWorker() error {
	if e.h == nil {
		return nil
	}
	err := e.r.a.engineClose(e.h)
	e.h = nil
	delete(e.r.engines, e)
	return err
}

// build runs the shim's builder (minutes; the worker is busy meanwhile).
func (r *Runtime) build(s buildSpec) (BuildResult, error) {
	var res BuildResult
	err := r.call(func() error {
		var err error
		res, err = r.a.build(r.h, s)
		return err
	})
	return res, err
}
