package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/gpu"
)

// worker is one network loop with its own backend, GPU monitor and
// throttle, and pipeline. Every worker takes decoded frames from the one
// queue the decode loop fills (the intake queue behind it), so a worker
// that waits for its GPU (throttle) or has stopped simply takes none, and
// the others go on.
//
// A daemon has one worker unless backend.devices lists GPUs (one worker
// each) or backend.workers asks for several on the CPU.
type worker struct {
	d    *Daemon
	name string         // "gpu0", "cpu1": its log field and metrics label
	cfg  *config.Config // the configuration at start, with this worker's gpu.device and backend.threads
	// labelled: the daemon has several workers, so the metrics a worker
	// registers (GPU telemetry, FP16 guard) carry worker=name. One worker
	// registers them as a daemon always did.
	labelled bool
	// named: the name is fixed by the configuration; otherwise (one
	// worker) it follows the backend opened: gpuN on a GPU, else cpu0.
	named bool
	// onGPU: a worker of backend.devices, which must run on its GPU; a
	// backend that came up on the CPU instead (backend.kind = "auto"
	// without TensorRT) is refused rather than left to share the cores
	// with the other GPU workers under a GPU's name.
	onGPU bool
	log   zerolog.Logger

	backend deblur.Backend
	gpu     *gpuThrottle
	pipe    *deblur.Pipeline
	clock   stageClock // its network calls' progress, for the watchdog

	stopped atomic.Pointer[string] // why it stopped; nil while it runs
}

// countGPUs is how many GPUs the machine has (Options.CountGPUs in tests).
func (d *Daemon) countGPUs() (int, error) {
	if d.opts.CountGPUs != nil {
		return d.opts.CountGPUs()
	}
	return gpu.Count("")
}

// planWorkers makes the workers the configuration asks for (not yet
// started): one per GPU of backend.devices ("all": every GPU the machine
// has), or backend.workers on the CPU sharing backend.threads, or one.
func (d *Daemon) planWorkers(cfg *config.Config) ([]*worker, error) {
	devices, all, err := cfg.Backend.DeviceList()
	if err != nil {
		return nil, cfg.Errorf("backend.devices", "%w", err) // Validate has refused it already
	}
	if all || len(devices) > 0 {
		n, cerr := d.countGPUs()
		switch {
		case all && cerr != nil:
			return nil, cfg.Errorf("backend.devices", "cannot count the GPUs: %v; list them instead, such as [0, 1]", cerr)
		case all:
			for i := 0; i < n; i++ {
				devices = append(devices, i)
			}
			if n == 0 {
				return nil, cfg.Errorf("backend.devices", "this machine has no GPU")
			}
		case cerr == nil:
			for _, dev := range devices {
				if dev >= n {
					return nil, cfg.Errorf("backend.devices", "GPU %d is out of range: this machine has %d GPU(s), 0..%d", dev, n, n-1)
				}
			}
		}
		// cerr != nil with a list: the backends say it when they open.
		var out []*worker
		for _, dev := range devices {
			c := *cfg
			c.GPU.Device = dev
			out = append(out, &worker{d: d, name: fmt.Sprintf("gpu%d", dev), cfg: &c, named: true, onGPU: true})
		}
		return d.label(out), nil
	}
	if cfg.Backend.Workers <= 1 {
		return []*worker{{d: d, name: "cpu0", cfg: cfg, log: d.log}}, nil
	}
	n := cfg.Backend.Workers
	total := cfg.Backend.Threads
	if total == 0 {
		total = runtime.GOMAXPROCS(0)
	}
	var out []*worker
	for i := 0; i < n; i++ {
		c := *cfg
		// Split evenly, the remainder to the first ones; at least one
		// each (more workers than cores then share them).
		c.Backend.Threads = max(1, total/n+btoi(i < total%n))
		out = append(out, &worker{d: d, name: fmt.Sprintf("cpu%d", i), cfg: &c, named: true})
	}
	return d.label(out), nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (d *Daemon) label(ws []*worker) []*worker {
	for _, w := range ws {
		w.labelled = len(ws) > 1
		w.log = d.log.With().Str("worker", w.name).Logger()
	}
	return ws
}

// registerer is where a worker's own metrics go.
func (w *worker) registerer() prometheus.Registerer {
	if !w.labelled {
		return w.d.metrics.Registry
	}
	return prometheus.WrapRegistererWith(prometheus.Labels{"worker": w.name}, w.d.metrics.Registry)
}

// opened names an unnamed (single) worker after its backend and sets its
// logger and metrics.
func (w *worker) opened(b deblur.Backend) {
	w.backend = b
	if !w.named {
		if u, ok := b.(deblur.GPUBackend); ok && u.UsesGPU() {
			w.name = fmt.Sprintf("gpu%d", w.cfg.GPU.Device)
		}
	}
	w.log = w.d.log.With().Str("worker", w.name).Logger()
	if !w.labelled {
		w.log = w.d.log // one worker logs as a daemon always did
	}
	w.d.metrics.WorkerUp.WithLabelValues(w.name).Set(1)
	for _, r := range []string{"ok", "failed", "requeued"} {
		w.d.metrics.WorkerFrames.WithLabelValues(w.name, r)
	}
}

// running reports whether the worker takes frames.
func (w *worker) running() bool { return w.backend != nil && w.stopped.Load() == nil }

// pipelineOptions are the live model keys plus this worker's GPU gate and
// the out-of-memory floor (gpu.min_tile).
func (w *worker) pipelineOptions(cfg *config.Config) deblur.Options {
	return deblur.Options{Tile: cfg.Model.Tile, Overlap: cfg.Model.Overlap, Seed: cfg.Model.Seed,
		MinTile: cfg.GPU.MinTile, Gate: w.gpu.gateFor()}
}

// stop takes the worker out of service, unless it is the last one running:
// then it stays, and its failures are the frames' (as with one worker).
// It reports whether the worker stopped.
func (d *Daemon) stopWorker(w *worker, why string) bool {
	d.workersMu.Lock()
	defer d.workersMu.Unlock()
	if w.stopped.Load() != nil {
		return true
	}
	n := 0
	for _, o := range d.workers {
		if o.running() {
			n++
		}
	}
	if n <= 1 && w.running() {
		return false
	}
	w.stopped.Store(&why)
	d.metrics.WorkerUp.WithLabelValues(w.name).Set(0)
	return true
}

// runningWorkers are the workers that take frames.
func (d *Daemon) runningWorkers() []*worker {
	d.workersMu.Lock()
	defer d.workersMu.Unlock()
	var out []*worker
	for _, w := range d.workers {
		if w.running() {
			out = append(out, w)
		}
	}
	return out
}

// degraded says which workers have stopped, and why ("" when none has).
func (d *Daemon) degraded() string {
	d.workersMu.Lock()
	defer d.workersMu.Unlock()
	var parts []string
	for _, w := range d.workers {
		if p := w.stopped.Load(); p != nil {
			parts = append(parts, fmt.Sprintf("worker %s stopped (%s)", w.name, *p))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// loop runs the model on one frame at a time: serialising a worker's
// network keeps its memory to one frame's worth. It needs no OS thread of
// its own: the TensorRT backend runs every call on its worker's locked
// thread (trt/worker.go), where its CUDA context is current, and ONNX
// Runtime has no thread affinity.
//
// A frame the backend fails while other workers run goes back to inbox/
// and this worker stops: a GPU that fails stops only its worker. The last
// worker running fails such frames as a daemon of one worker does, and so
// does any worker for a frame that has stopped a worker already (it failed
// on two backends: the frame is at fault), so one bad frame stops at most
// one worker.
func (w *worker) loop(ctx context.Context, netCh <-chan *frame, encCh chan<- *frame) {
	d := w.d
	for f := range netCh {
		if d.stopping() {
			// Decoded but not started: not "in flight"; back to inbox/.
			d.release(f.job, "draining before the network started")
			d.freeFrame(f)
			continue
		}
		f.w = w
		cfg := d.cfg.Load()
		if err := w.pipe.SetOptions(w.pipelineOptions(cfg)); err != nil {
			// Live tile/overlap change that this model cannot take: keep
			// the previous options (validated at start) and say so.
			w.log.Error().Err(err).Msg("model.tile/overlap from the reloaded config do not fit the model; keeping the previous ones")
		}
		w.clock.busy()
		out, st, err := d.runPipeline(ctx, w.pipe, f)
		w.clock.idle()
		again := d.takeRequeued(f.job.Arrived)
		w.gpu.frameDone(st, err)
		if err != nil {
			switch {
			case isDrainWait(err):
				d.release(f.job, "drain began while it waited for the GPU")
			case errIsCancel(err) || ctx.Err() != nil:
				d.release(f.job, "cancelled in the network (drain timeout)")
			case !again && d.stopWorker(w, "its backend failed: "+firstLine(err.Error())):
				w.log.Error().Err(err).Str("name", f.job.Name).
					Msg("worker stopped: its backend failed; the frame goes back to inbox/ for the other workers")
				d.metrics.WorkerFrames.WithLabelValues(w.name, "requeued").Inc()
				d.release(f.job, fmt.Sprintf("worker %s stopped", w.name))
				d.noteRequeued(filepath.Base(f.job.Path)) // its name in inbox/ now
				d.freeFrame(f)
				return
			default:
				if again {
					w.log.Warn().Str("name", f.job.Name).
						Msg("the frame failed on a second backend after stopping a worker: it is the frame's fault, not this worker's")
				}
				d.metrics.WorkerFrames.WithLabelValues(w.name, "failed").Inc()
				d.fail(f.job, stagePipeline, err.Error())
			}
			d.freeFrame(f)
			continue
		}
		d.metrics.WorkerFrames.WithLabelValues(w.name, "ok").Inc()
		d.networkDone(f, out, st)
		encCh <- f
	}
}

// noteRequeued remembers, by its name in inbox/, a frame handed back when
// its worker stopped.
func (d *Daemon) noteRequeued(name string) {
	d.workersMu.Lock()
	defer d.workersMu.Unlock()
	if d.requeued == nil {
		d.requeued = map[string]bool{}
	}
	d.requeued[name] = true
}

// takeRequeued reports whether the frame that arrived as name was handed
// back by a stopped worker, and forgets it. At most one name per stopped
// worker is ever held.
func (d *Daemon) takeRequeued(name string) bool {
	d.workersMu.Lock()
	defer d.workersMu.Unlock()
	if !d.requeued[name] {
		return false
	}
	delete(d.requeued, name)
	return true
}

// usesGPU says whether a backend runs the network on a GPU.
func usesGPU(b deblur.Backend) bool {
	u, ok := b.(deblur.GPUBackend)
	return ok && u.UsesGPU()
}

// checkOnGPU refuses, for a worker of backend.devices, a backend that does
// not run on the GPU.
func (w *worker) checkOnGPU(b deblur.Backend) error {
	if !w.onGPU || usesGPU(b) {
		return nil
	}
	return w.cfg.Errorf("backend.devices", "worker %s got backend %s, which does not run on the GPU "+
		"(backend.kind = %q fell back to the CPU): a worker of backend.devices needs TensorRT on its GPU; "+
		"for CPU workers set backend.workers instead", w.name, b.Name(), w.cfg.Backend.Kind)
}

// leaveOut stops a worker that could not start (its backend or GPU
// monitor did not open) while the others start: the daemon runs degraded
// and says why.
func (d *Daemon) leaveOut(w *worker, why string, err error) {
	w.stopped.Store(&why)
	d.metrics.WorkerUp.WithLabelValues(w.name).Set(0)
	d.log.Error().Err(err).Str("worker", w.name).Msg("worker left out: " + why + "; the others start")
}
