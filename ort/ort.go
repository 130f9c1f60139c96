// Package ort is the ONNX Runtime (CPU) backend: it runs the exported
// prior.onnx and transformer.onnx through github.com/yalue/onnxruntime_go and
// implements deblur.Backend. The library, libonnxruntime.so.1, is loaded at
// run time (dlopen), so the binary builds and starts without it; see
// DefaultLibraryPath for where it is looked for.
package ort

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"sync"

	onnx "github.com/yalue/onnxruntime_go"

	"hidiffd/deblur"
	"hidiffd/model"
)

// Options tune Open. The zero value is what the daemon wants.
type Options struct {
	// LibraryPath is libonnxruntime.so.1; empty means DefaultLibraryPath().
	// One process holds one ONNX Runtime: every Backend must name the same
	// library (or leave it empty and find the same one).
	LibraryPath string
	// IntraOpThreads is the number of threads one graph runs on; 0 means the
	// CPUs this process may use (runtime.GOMAXPROCS, which since Go 1.25 also
	// follows the cgroup CPU quota, so a systemd CPUQuota= is respected).
	IntraOpThreads int
	// DisableMemArena turns ORT's CPU arena off. The arena keeps every peak
	// it has reached for the life of the session (docs/ARCHITECTURE.md: 10.4 GB for one
	// untiled 720p frame of a small net); with fixed-size tiles, as the
	// pipeline feeds, the peak is fixed and the arena is faster, so leave it
	// on unless inputs vary in size.
	DisableMemArena bool
}

// ErrClosed is returned by calls on a Backend after Close.
var ErrClosed = errors.New("ort: backend is closed")

// Backend is one model (prior + transformer) loaded into ONNX Runtime.
//
// Calls are serialised by a mutex: the pipeline feeds one backend from one
// worker anyway, and two graphs running at once on the same cores would only
// share them, each with IntraOpThreads threads, and double the memory peak.
// A caller who wants parallel models opens several Backends. Close waits for
// a running call; cancel its context first to cut it short.
type Backend struct {
	mu          sync.Mutex
	closed      bool
	prior       graph
	transformer graph

	info    deblur.ModelInfo
	meta    [2]map[string]string // prior's, transformer's metadata_props
	dir     string
	lib     string
	version string
	threads int
}

// graph is one loaded ONNX file.
type graph struct {
	io   model.GraphIO
	path string
	sess *onnx.DynamicAdvancedSession
}

var _ deblur.Backend = (*Backend)(nil)

// Open loads modelDir/prior.onnx and modelDir/transformer.onnx, checks them
// against the ONNX contract (model.Inspect: names, float32, [1,3,H,W] with H
// and W dynamic, [1,16,256] priors) and reads their metadata into Info.
// Every error names the file at fault.
func Open(modelDir string, opts Options) (*Backend, error) {
	b := &Backend{
		dir:         modelDir,
		prior:       graph{io: model.PriorIO, path: filepath.Join(modelDir, model.PriorFile)},
		transformer: graph{io: model.TransformerIO, path: filepath.Join(modelDir, model.TransformerFile)},
	}
	// The contract and the metadata first (model.Inspect): they need neither
	// the library nor a session, and a wrong file should not cost a slow
	// session build.
	m, err := model.Inspect(modelDir)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	b.info, b.meta = m.Info, m.Metadata

	lib := opts.LibraryPath
	if lib == "" {
		if lib, err = DefaultLibraryPath(); err != nil {
			return nil, err
		}
	}
	if b.lib, b.version, err = ensureEnv(lib); err != nil {
		return nil, err
	}

	b.threads = opts.IntraOpThreads
	if b.threads <= 0 {
		b.threads = runtime.GOMAXPROCS(0)
	}
	ok := false
	defer func() {
		if !ok {
			b.Close()
		}
	}()
	for _, g := range []*graph{&b.prior, &b.transformer} {
		so, err := sessionOptions(b.threads, !opts.DisableMemArena)
		if err != nil {
			return nil, fmt.Errorf("ort: %s: session options: %w", g.path, err)
		}
		g.sess, err = onnx.NewDynamicAdvancedSession(g.path, g.io.Inputs[:], []string{g.io.Output}, so)
		so.Destroy()
		if err != nil {
			return nil, fmt.Errorf("ort: %s: %w", g.path, err)
		}
	}
	ok = true
	return b, nil
}

// sessionOptions are the settings docs/ARCHITECTURE.md ("Backends") records: spinning
// off (a spinning pool costs 2x when the CPU is shared, and an edge box always
// shares it with decode/encode), every graph optimisation, sequential
// execution (the graphs are chains; a parallel executor only adds an
// inter-op pool competing for the same cores).
func sessionOptions(threads int, arena bool) (*onnx.SessionOptions, error) {
	so, err := onnx.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return so.SetIntraOpNumThreads(threads) },
		func() error { return so.SetInterOpNumThreads(1) },
		func() error { return so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0") },
		func() error { return so.AddSessionConfigEntry("session.inter_op.allow_spinning", "0") },
		func() error { return so.SetExecutionMode(onnx.ExecutionModeSequential) },
		func() error { return so.SetGraphOptimizationLevel(onnx.GraphOptimizationLevelEnableAll) },
		func() error { return so.SetCpuMemArena(arena) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			so.Destroy()
			return nil, err
		}
	}
	return so, nil
}

// Name implements deblur.Backend.
func (b *Backend) Name() string { return "onnxruntime" }

// Info implements deblur.Backend: what the graphs' metadata says.
func (b *Backend) Info() deblur.ModelInfo { return b.info }

// Metadata returns copies of both graphs' metadata_props, including keys
// ModelInfo has no field for (for `doctor` and logs).
func (b *Backend) Metadata() (prior, transformer map[string]string) {
	return maps.Clone(b.meta[0]), maps.Clone(b.meta[1])
}

// Dir is the model folder the backend was opened from.
func (b *Backend) Dir() string { return b.dir }

// LibraryPath is the libonnxruntime.so.1 in use (for logs and `doctor`).
func (b *Backend) LibraryPath() string { return b.lib }

// RuntimeVersion is ONNX Runtime's version string, e.g. "1.30.0".
func (b *Backend) RuntimeVersion() string { return b.version }

// Threads is the intra-op thread count each graph runs with.
func (b *Backend) Threads() int { return b.threads }

// Prior implements deblur.Backend.
func (b *Backend) Prior(ctx context.Context, blur, noise deblur.Tensor) (deblur.Tensor, error) {
	if err := b.checkImage("Prior", "blur", blur); err != nil {
		return deblur.Tensor{}, err
	}
	if err := b.checkPrior("Prior", "noise", noise); err != nil {
		return deblur.Tensor{}, err
	}
	out := deblur.NewTensor(1, int64(b.info.PriorTokens), int64(b.info.PriorChannels))
	if err := b.run(ctx, &b.prior, []deblur.Tensor{blur, noise}, out); err != nil {
		return deblur.Tensor{}, err
	}
	return out, nil
}

// Transform implements deblur.Backend.
func (b *Backend) Transform(ctx context.Context, blur, prior deblur.Tensor) (deblur.Tensor, error) {
	if err := b.checkImage("Transform", "blur", blur); err != nil {
		return deblur.Tensor{}, err
	}
	if err := b.checkPrior("Transform", "prior", prior); err != nil {
		return deblur.Tensor{}, err
	}
	out := deblur.NewTensor(blur.Shape...)
	if err := b.run(ctx, &b.transformer, []deblur.Tensor{blur, prior}, out); err != nil {
		return deblur.Tensor{}, err
	}
	return out, nil
}

// run feeds inputs to g and writes its one output into out. The ORT tensors
// wrap the Go slices (no copies); they live only for the call.
func (b *Backend) run(ctx context.Context, g *graph, inputs []deblur.Tensor, out deblur.Tensor) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ort: %s: not started: %w", g.io.File, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	// The wait for the mutex may have outlasted the context.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ort: %s: not started: %w", g.io.File, err)
	}

	values := make([]onnx.Value, 0, len(inputs))
	defer func() {
		for _, v := range values {
			v.Destroy()
		}
	}()
	for i, t := range inputs {
		v, err := onnx.NewTensor(onnx.NewShape(t.Shape...), t.Data)
		if err != nil {
			return fmt.Errorf("ort: %s: input %q: %w", g.io.File, g.io.Inputs[i], err)
		}
		values = append(values, v)
	}
	ov, err := onnx.NewTensor(onnx.NewShape(out.Shape...), out.Data)
	if err != nil {
		return fmt.Errorf("ort: %s: output %q: %w", g.io.File, g.io.Output, err)
	}
	values = append(values, ov)

	// A transformer run on a large frame takes minutes on a small CPU, so
	// cancellation also stops a run in flight, through RunOptions'
	// terminate flag. The flag is raised under a lock so that it can never
	// touch run options that have already been destroyed.
	ro, err := onnx.NewRunOptions()
	if err != nil {
		return fmt.Errorf("ort: %s: run options: %w", g.io.File, err)
	}
	var roMu sync.Mutex
	done := false
	defer func() {
		roMu.Lock()
		done = true
		roMu.Unlock()
		ro.Destroy()
	}()
	stop := context.AfterFunc(ctx, func() {
		roMu.Lock()
		defer roMu.Unlock()
		if !done {
			ro.Terminate()
		}
	})
	defer stop()

	if err := g.sess.RunWithOptions(values[:len(inputs)], []onnx.Value{ov}, ro); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("ort: %s: stopped: %w", g.io.File, cerr)
		}
		return fmt.Errorf("ort: %s: %w", g.io.File, err)
	}
	return nil
}

// Close implements deblur.Backend: it frees both sessions (weights and
// arena). A second Close does nothing; later calls return ErrClosed. The
// process-wide ONNX Runtime stays loaded (see env).
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for _, g := range []*graph{&b.prior, &b.transformer} {
		if g.sess != nil {
			if err := g.sess.Destroy(); err != nil {
				errs = append(errs, fmt.Errorf("ort: closing %s: %w", g.path, err))
			}
			g.sess = nil
		}
	}
	return errors.Join(errs...)
}

// checkImage and checkPrior put the shared contract checks of deblur.ModelInfo
// in this backend's words.
func (b *Backend) checkImage(call, name string, t deblur.Tensor) error {
	if err := b.info.CheckImage(name, t); err != nil {
		return fmt.Errorf("ort: %s: %w", call, err)
	}
	return nil
}

func (b *Backend) checkPrior(call, name string, t deblur.Tensor) error {
	if err := b.info.CheckPrior(name, t); err != nil {
		return fmt.Errorf("ort: %s: %w", call, err)
	}
	return nil
}
