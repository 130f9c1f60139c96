// Package daemon wires hidiffd together and runs it: configuration, the
// spool, the folder watcher, the model, the frame pipeline (decode -> network
// -> encode), signals (SIGHUP reload, SIGTERM drain), sd_notify, logging and
// the HTTP endpoint. The packages it wires know nothing of each other.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"hidiffd/backend"
	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/gpu"
	"hidiffd/internal/clock"
	"hidiffd/logging"
	"hidiffd/model"
	"hidiffd/spool"
	"hidiffd/watch"
)

// Intake is the folder watcher as the daemon uses it; *watch.Watcher is the
// real one. Names come from Ready; Done is called for every name received.
type Intake interface {
	Run(ctx context.Context) error
	Ready() <-chan string
	Done(name string)
}

// Options are what Run needs besides the configuration file. The hooks are
// for tests; production leaves them nil.
type Options struct {
	// ConfigPath is re-read on SIGHUP. Config, if set, is the already loaded
	// configuration (the caller may have reported its errors already);
	// otherwise Run loads ConfigPath.
	ConfigPath string
	Config     *config.Config
	// Amend, if set, changes every configuration the daemon loads, at
	// start (when Run loads it) and at each SIGHUP, after the file is read
	// and before it is used: the command line's overrides (`run --backend`),
	// which a reload must not undo. An error refuses that configuration.
	Amend func(*config.Config) error
	// Version goes into logs and hidiffd_build_info.
	Version string
	// LogOutput receives the log lines (default os.Stdout: journald).
	LogOutput io.Writer

	// OpenBackend replaces the backend selection (tests use a fake network).
	OpenBackend func(cfg *config.Config) (deblur.Backend, error)
	// NewIntake replaces the folder watcher.
	NewIntake func(inbox string, cfg *config.Config, log watch.Logger) (Intake, error)
	// OpenMonitor replaces the GPU monitor selection (tests script the
	// readings).
	OpenMonitor func(cfg *config.Config) (gpu.Monitor, error)
	// Signals replaces os/signal delivery (tests send SIGHUP and SIGTERM
	// in-process). Run then does not install signal handlers.
	Signals <-chan os.Signal
	// OnListen is called with the bound HTTP address (tests use port 0).
	OnListen func(net.Addr)
	// Clock replaces the system clock for the retry backoff (tests).
	Clock clock.Clock
	// CountGPUs replaces counting the machine's GPUs (backend.devices).
	CountGPUs func() (int, error)
	// SkipWarmup skips the tile run through the network at start (tests
	// whose fake network counts or holds its calls).
	SkipWarmup bool
}

// maxModelLoad bounds how long start-up keeps asking systemd for more time
// (EXTEND_TIMEOUT_USEC) while the model loads: a load that hangs must still
// end in a start timeout and a restart.
const maxModelLoad = 10 * time.Minute

// Daemon is one running instance. Create and run it with Run.
type Daemon struct {
	opts    Options
	cfg     atomic.Pointer[config.Config] // effective configuration (live keys reloaded)
	log     zerolog.Logger
	notify  *Notifier
	metrics *Metrics
	health  Health

	spool     *spool.Spool
	workers   []*worker       // each with its backend, GPU throttle and pipeline (worker.go)
	workersMu sync.Mutex      // guards which workers run, and requeued
	requeued  map[string]bool // inbox/ names of frames a stopped worker handed back (worker.go)
	intake    Intake
	inbox     string                 // the spool's inbox/, known before the spool is open
	queued    atomic.Pointer[Intake] // d.intake once set, for the metrics goroutine

	backoff backoff
	clocks  clocks
	mem     memBudget

	// loadDeadline (unix nanoseconds) is how long loadBackend keeps asking
	// systemd for more start-up time; an engine build pushes it out.
	loadDeadline atomic.Int64

	// Counters for STATUS= (the metrics hold the same, but reading a
	// Prometheus counter back is clumsy).
	processed, failed, retried atomic.Int64

	stopOnce    sync.Once
	drainTimer  *time.Timer   // cancels the frame in flight when the drain takes too long
	stop        chan struct{} // closed: drain (stop intake, finish the frame in flight)
	cancelWork  context.CancelFunc
	cancelStart context.CancelFunc // stops a start-up in progress (a stop signal)
}

// Run runs the daemon until SIGTERM/SIGINT (or ctx ends) and the drain is
// complete. It returns nil after a clean drain and an error when start-up
// fails (bad config, spool not writable, model missing, port in use).
func Run(ctx context.Context, opts Options) error {
	cfg := opts.Config
	if cfg == nil {
		var err error
		if cfg, err = config.Load(opts.ConfigPath); err != nil {
			return err
		}
		if opts.Amend != nil {
			if err := opts.Amend(cfg); err != nil {
				return err
			}
		}
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stdout
	}
	log, err := logging.New(opts.LogOutput, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	d := &Daemon{opts: opts, log: log, stop: make(chan struct{})}
	if opts.Clock == nil {
		opts.Clock = clock.System{}
		d.opts.Clock = opts.Clock
	}
	d.backoff.clock = opts.Clock
	d.cfg.Store(cfg)
	d.notify, err = NewNotifier()
	if err != nil {
		log.Warn().Err(err).Msg("sd_notify disabled")
	}
	err = d.run(ctx)
	if err != nil {
		// `systemctl status` shows the last STATUS=: make it the reason.
		d.notify.Status("failed: " + firstLine(err.Error()))
		log.Error().Err(err).Msg("hidiffd stopped with an error")
	}
	return err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " (...)"
	}
	return s
}

// startup is what the start-up phases set up for serving, and the undoing
// of it: each phase pushes its cleanup, and run pops them in reverse order
// when it returns, whether start-up failed half-way or the daemon drained.
type startup struct {
	ctx      context.Context // the daemon's life: cancelled when run returns
	cancel   context.CancelFunc
	startCtx context.Context // cancelled by a stop signal during start-up
	workCtx  context.Context // the frame in flight: cancelled by a second signal or the drain timeout

	stopIntake context.CancelFunc // "intake"
	intakeDone chan struct{}
	intakeErr  atomic.Pointer[error] // the watcher gave up on its own

	undo []func()
}

// onStop pushes a cleanup; they run in reverse order.
func (s *startup) onStop(f func()) { s.undo = append(s.undo, f) }

func (s *startup) close() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
}

// phase is one named step of start-up. A phase that fails stops the start
// with its name in the error ("start-up phase spool: ..."), so the journal
// and `systemctl status` say which step failed; the ones before it are
// undone.
type phase struct {
	name string
	run  func(*Daemon, *startup) error
}

// phases are the start-up steps, in order. Signals come before anything
// slow (a SIGTERM during a long model load stops the load cleanly rather
// than killing the process); the backend is checked against the binary
// before the spool and the port, so there is nothing to undo.
var phases = []phase{
	{"check-backend", (*Daemon).checkBackend},
	{"metrics", (*Daemon).startMetrics},
	{"signals", (*Daemon).startSignals},
	{"http", (*Daemon).startHTTP},
	{"spool", (*Daemon).openSpool},
	{"backend", (*Daemon).openBackends},
	{"gpu", (*Daemon).startGPU},
	{"pipeline", (*Daemon).startPipelines},
	{"memory", (*Daemon).measureMemory},
	{"intake", (*Daemon).startIntake},
}

// run goes through the start-up phases, then serves until the drain is
// complete.
func (d *Daemon) run(ctx context.Context) error {
	cfg := d.cfg.Load()
	d.log.Info().Str("version", d.opts.Version).Str("config", cfg.Path()).Int("pid", os.Getpid()).Msg("hidiffd starting")
	d.health.SetNotReady("starting")

	s := &startup{}
	s.ctx, s.cancel = context.WithCancel(ctx)
	workCtx, cancelWork := context.WithCancel(context.Background())
	s.workCtx, d.cancelWork = workCtx, cancelWork
	startCtx, cancelStart := context.WithCancel(s.ctx)
	s.startCtx, d.cancelStart = startCtx, cancelStart
	s.onStop(func() { cancelStart(); cancelWork(); s.cancel() })
	defer s.close()

	for _, p := range phases {
		t0 := time.Now()
		if err := p.run(d, s); err != nil {
			return fmt.Errorf("start-up phase %s: %w", p.name, err)
		}
		d.log.Debug().Str("phase", p.name).Dur("took", time.Since(t0)).Msg("start-up phase done")
		if s.startCtx.Err() != nil {
			d.log.Info().Str("phase", p.name).Msg("stopped during start-up")
			return nil
		}
	}
	return d.serve(s)
}

// checkBackend refuses a TensorRT configuration this binary cannot run.
func (d *Daemon) checkBackend(*startup) error { return backend.CheckBuilt(d.cfg.Load()) }

// startMetrics creates what the HTTP handlers and STATUS= lines read from
// other goroutines while the later phases assign d.spool and d.intake.
func (d *Daemon) startMetrics(*startup) error {
	cfg := d.cfg.Load()
	d.inbox = filepath.Join(filepath.Clean(cfg.Spool.Root), spool.Inbox)
	d.metrics = NewMetrics(d.opts.Version, d.queueDepth, d.backlog, func() float64 {
		if d.health.Serving() && !d.stopping() {
			return 1
		}
		return 0
	})
	d.health.SetCheck(d.problem)
	d.health.SetDegraded(d.degraded)
	d.registerMemoryMetrics()
	return nil
}

// startSignals turns SIGTERM/SIGINT into a drain (cancelling start-up) and
// SIGHUP into a reload, from now until run returns.
func (d *Daemon) startSignals(s *startup) error {
	sigs := d.opts.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		s.onStop(func() { signal.Stop(ch) })
		sigs = ch
	}
	sigDone := make(chan struct{})
	go func() {
		defer close(sigDone)
		d.handleSignals(s.ctx, sigs)
	}()
	s.onStop(func() { s.cancel(); <-sigDone })
	return nil
}

// startHTTP serves /metrics, /healthz and /readyz (http.listen; "" = off).
func (d *Daemon) startHTTP(s *startup) error {
	cfg := d.cfg.Load()
	if cfg.HTTP.Listen == "" {
		return nil
	}
	addr, httpDone, err := serveHTTP(s.ctx, cfg.HTTP.Listen, d.health.Handler(d.metrics), d.log)
	if err != nil {
		return err
	}
	s.onStop(func() { s.cancel(); <-httpDone })
	d.log.Info().Str("addr", addr.String()).Msg("http listening (/metrics /healthz /readyz)")
	if d.opts.OnListen != nil {
		d.opts.OnListen(addr)
	}
	return nil
}

// openSpool creates the folders, takes this instance's lease, re-queues
// its work/<id>/ and starts the lease loop, which takes over expired
// instances' (lease.go).
func (d *Daemon) openSpool(s *startup) error {
	cfg := d.cfg.Load()
	d.setStatus("recovering spool %s", cfg.Spool.Root)
	sp, err := spool.Open(cfg.Spool.Root, spool.Options{
		KeepOriginals: cfg.Spool.KeepOriginals,
		Instance:      spool.ExpandInstance(cfg.Spool.Instance),
		Lock:          true,
		Lease:         cfg.Spool.Lease.Duration,
		LeaseMargin:   cfg.Spool.LeaseMargin.Duration,
		Log:           logging.KV(d.log.With().Str("component", "spool").Logger()),
	})
	if err != nil {
		return cfg.Errorf("spool.root", "%w", err)
	}
	d.spool = sp
	s.onStop(func() { d.spool.Close() })
	requeued, err := d.spool.Recover()
	if err != nil {
		// Recover keeps going past single files; what it could not move
		// stays where it is and is retried at the next start.
		d.log.Error().Err(err).Msg("spool recovery incomplete")
	}
	d.log.Info().Str("root", d.spool.Root()).Int("requeued", requeued).Msg("spool recovered")
	s.onStop(d.startLease(d.log.With().Str("component", "spool").Logger(), cfg.Spool.Lease.Duration))
	return nil
}

// openBackends loads the model on every worker's backend (one, unless
// backend.devices or backend.workers ask for several). With several, a
// worker whose backend does not open is left out (degraded) and the others
// start; none opening is a failed start.
func (d *Daemon) openBackends(s *startup) error {
	ws, err := d.planWorkers(d.cfg.Load())
	if err != nil {
		return err
	}
	d.workersMu.Lock() // STATUS= and a drain read the workers from other goroutines
	d.workers = ws
	d.workersMu.Unlock()
	var failed []string
	var lastErr error
	for _, w := range ws {
		b, err := d.loadBackend(s.startCtx, w)
		if err == nil {
			if err = w.checkOnGPU(b); err != nil {
				if cerr := b.Close(); cerr != nil {
					w.log.Error().Err(cerr).Msg("closing backend")
				}
			}
		}
		if err != nil {
			if len(ws) == 1 || s.startCtx.Err() != nil {
				return err
			}
			d.leaveOut(w, "its backend did not open: "+firstLine(err.Error()), err)
			failed, lastErr = append(failed, w.name), err
			continue
		}
		d.workersMu.Lock()
		w.opened(b)
		d.workersMu.Unlock()
		s.onStop(func() {
			if cerr := b.Close(); cerr != nil {
				w.log.Error().Err(cerr).Msg("closing backend")
			}
		})
		info := b.Info()
		d.metrics.BackendInfo.WithLabelValues(b.Name(), info.Model, info.Preset, info.Version).Set(1)
	}
	if len(failed) == len(ws) {
		return fmt.Errorf("no worker could open its backend (%s); the last error: %w", strings.Join(failed, ", "), lastErr)
	}
	return nil
}

// startGPU opens each worker's GPU telemetry and throttle gate; each
// poller keeps /metrics current between frames and stops before its
// monitor closes. With several workers, one whose monitor does not open is
// left out, as one whose backend does not; the last one running stops the
// start.
func (d *Daemon) startGPU(s *startup) error {
	for _, w := range d.runningWorkers() {
		g, err := d.openGPU(w)
		if err != nil {
			if w.labelled {
				err = fmt.Errorf("worker %s: %w", w.name, err)
			}
			if len(d.runningWorkers()) == 1 {
				return err
			}
			d.leaveOut(w, "its GPU monitor did not open: "+firstLine(err.Error()), err)
			continue
		}
		d.workersMu.Lock()
		w.gpu = g
		d.workersMu.Unlock()
		gpuCtx, stopGPU := context.WithCancel(s.ctx)
		gpuDone := make(chan struct{})
		go func() { defer close(gpuDone); g.poll(gpuCtx) }()
		s.onStop(func() { stopGPU(); <-gpuDone; g.close() })
	}
	return nil
}

// startPipelines makes each worker's pipeline over its backend and runs one
// tile through it: the runtime's working memory for it is allocated now
// (and kept), so it is measured as the model's, not charged to the first
// frame; the first frame is faster too.
func (d *Daemon) startPipelines(s *startup) error {
	cfg := d.cfg.Load()
	for _, w := range d.runningWorkers() {
		pipe, err := deblur.NewPipeline(progressBackend{w.backend, &w.clock}, w.pipelineOptions(cfg))
		if err != nil {
			return cfg.Errorf("model.tile", "%w", err)
		}
		w.pipe = pipe
		if !d.opts.SkipWarmup {
			d.warmUp(s.startCtx, pipe, cfg)
		}
	}
	return nil
}

// measureMemory records what the model and runtime hold now: outside the
// frames' budget (limits.memory_mib).
func (d *Daemon) measureMemory(*startup) error { return d.measureFixed() }

// startIntake starts the folder watcher. Should it give up on its own, the
// daemon would look healthy and do nothing: it drains instead, and run
// returns the watcher's error so that systemd restarts it.
func (d *Daemon) startIntake(s *startup) error {
	cfg := d.cfg.Load()
	wlog := logging.KV(d.log.With().Str("component", "watch").Logger())
	var in Intake
	var err error
	if d.opts.NewIntake != nil {
		in, err = d.opts.NewIntake(d.inbox, cfg, wlog)
	} else {
		in, err = watch.New(d.inbox, watch.Options{
			Settle:    cfg.Spool.Settle.Duration,
			Rescan:    cfg.Spool.Rescan.Duration,
			QueueSize: cfg.Spool.QueueSize,
		}, wlog)
	}
	if err != nil {
		return err
	}
	d.intake = in
	d.queued.Store(&d.intake)
	intakeCtx, stopIntake := context.WithCancel(context.Background())
	s.stopIntake, s.intakeDone = stopIntake, make(chan struct{})
	s.onStop(stopIntake)
	go func() {
		defer close(s.intakeDone)
		err := in.Run(intakeCtx)
		if intakeCtx.Err() == nil {
			if err == nil {
				err = errors.New("intake stopped unexpectedly")
			}
			s.intakeErr.Store(&err)
			d.log.Error().Err(err).Msg("intake stopped; shutting down")
			d.beginDrain("intake stopped")
		}
	}()
	return nil
}

// serve runs the frame pipeline (decode -> network -> encode, one goroutine
// each), says READY=1, and waits for the drain to start (signal, ctx, or
// intake giving up) and then to complete.
func (d *Daemon) serve(s *startup) error {
	cfg := d.cfg.Load()
	netCh := make(chan *frame) // every worker takes from it
	encCh := make(chan *frame, 1)
	workers := d.runningWorkers()
	var wg, nets sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.decodeLoop(netCh) }()
	for _, w := range workers {
		nets.Add(1)
		go func() { defer nets.Done(); w.loop(s.workCtx, netCh, encCh) }()
	}
	go func() { defer wg.Done(); nets.Wait(); close(encCh) }()
	go func() { defer wg.Done(); d.encodeLoop(encCh) }()

	d.health.SetReady()
	d.notify.Ready(d.statusLine())
	w := workers[0]
	info := w.backend.Info()
	e := d.log.Info().Str("backend", w.backend.Name()).Str("model", info.Model).Str("preset", info.Preset).
		Str("model_version", info.Version).Int("tile", cfg.Model.Tile)
	if len(d.workers) > 1 {
		names := make([]string, len(workers))
		for i, w := range workers {
			names[i] = w.name
		}
		e = e.Strs("workers", names)
		if g := d.degraded(); g != "" {
			e = e.Str("degraded", g)
		}
	}
	e.Msg("ready")

	wdDone := make(chan struct{})
	go func() { defer close(wdDone); d.housekeeping(s.ctx) }()

	select {
	case <-d.stop:
	case <-s.ctx.Done():
		d.beginDrain("context cancelled")
	}
	s.stopIntake()
	wg.Wait()
	d.drainTimer.Stop()
	<-s.intakeDone
	s.cancel()
	<-wdDone
	d.notify.Status(d.statusWith("stopped"))
	d.log.Info().Int64("processed", d.processed.Load()).Int64("failed", d.failed.Load()).
		Int64("retried", d.retried.Load()).Msg("stopped")
	if p := s.intakeErr.Load(); p != nil {
		return fmt.Errorf("intake: %w", *p)
	}
	return nil
}

// handleSignals turns SIGTERM/SIGINT into a drain (a second one cancels the
// frame in flight at once) and SIGHUP into a reload.
func (d *Daemon) handleSignals(ctx context.Context, sigs <-chan os.Signal) {
	terms := 0
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				d.reload()
			case syscall.SIGTERM, syscall.SIGINT, os.Interrupt:
				terms++
				d.cancelStart()
				if terms == 1 {
					d.beginDrain(s.String())
				} else {
					d.log.Warn().Str("signal", s.String()).Msg("second stop signal: cancelling the frame in flight")
					d.cancelWork()
				}
			}
		}
	}
}

// beginDrain stops intake; the frame in the network finishes unless
// shutdown.drain_timeout passes first, then it is cancelled and released.
func (d *Daemon) beginDrain(why string) {
	d.stopOnce.Do(func() {
		timeout := d.cfg.Load().Shutdown.DrainTimeout.Duration
		d.log.Info().Str("reason", why).Dur("drain_timeout", timeout).Msg("draining")
		d.health.SetNotReady("draining")
		// The timer exists before d.stop closes: run reads it after <-d.stop.
		d.drainTimer = time.AfterFunc(timeout, func() {
			d.log.Warn().Msg("drain timeout: cancelling the frame in flight")
			d.cancelWork()
		})
		// STOPPING=1 before d.stop closes: run sends the final STATUS once
		// it sees d.stop closed, and systemd must get them in this order
		// (seen reversed: TestSdNotifySequence, on a loaded machine).
		d.notify.Stopping(d.statusWith("draining"))
		close(d.stop)
	})
}

func (d *Daemon) stopping() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

// reload re-reads the configuration file (SIGHUP). Live keys apply at once;
// the others are reported as needing a restart. A file that does not load is
// reported and ignored.
func (d *Daemon) reload() {
	// Tell systemd only while running: READY=1 at the end of a reload during
	// start-up would announce readiness before the model is loaded.
	if d.health.Ready() && !d.stopping() {
		d.notify.Reloading()
		defer func() { d.notify.Ready(d.statusLine()) }()
	}
	old := d.cfg.Load()
	path := d.opts.ConfigPath
	if path == "" {
		path = old.Path()
	}
	next, err := config.Load(path)
	if err == nil && d.opts.Amend != nil {
		err = d.opts.Amend(next)
	}
	if err != nil {
		d.log.Error().Err(err).Str("config", path).Msg("reload failed; keeping the running configuration")
		d.metrics.Reloads.WithLabelValues("error").Inc()
		return
	}
	changes := next.Diff(old)
	eff := old.WithLive(next)
	if eff.Log.Level != old.Log.Level {
		_ = logging.SetLevel(eff.Log.Level) // validated by Load
	}
	d.cfg.Store(eff)
	if eff.Limits.MemoryMiB != old.Limits.MemoryMiB {
		if c := d.memCapacity(); c < 64<<20 {
			d.log.Error().Int("limits.memory_mib", eff.Limits.MemoryMiB).Str("model_and_runtime", mib(d.mem.fixed)).
				Msg("the new memory budget leaves almost nothing for frames: every frame will go to failed/")
		}
	}
	d.metrics.Reloads.WithLabelValues("ok").Inc()
	var applied, restart []string
	for _, c := range changes {
		if c.Live {
			applied = append(applied, c.Key)
		} else {
			restart = append(restart, c.Key)
			d.log.Warn().Str("key", c.Key).Str("running", c.Old).Str("file", c.New).
				Msg("changed key needs a restart to take effect")
		}
		if c.Key == "model.dir" {
			// Only a restart loads it: say now if that restart would fail.
			if _, err := model.Inspect(next.Model.Dir); err != nil {
				d.log.Error().Err(next.Errorf("model.dir", "%w", err)).
					Msg("the reloaded model.dir cannot be loaded: a restart would fail; the running model stays")
			}
		}
	}
	d.log.Info().Str("config", path).Strs("applied", applied).Strs("needs_restart", restart).Msg("configuration reloaded")
}

// loadBackend opens a worker's backend, keeping systemd patient while it
// loads (EXTEND_TIMEOUT_USEC, plus watchdog pings in case the watchdog is
// already armed) for at most maxModelLoad.
func (d *Daemon) loadBackend(ctx context.Context, w *worker) (deblur.Backend, error) {
	cfg, reg, log := w.cfg, w.registerer(), w.log
	d.setStatus("loading model %s", cfg.Model.Dir)
	d.health.SetNotReady("loading model")
	const step = 10 * time.Second
	d.notify.ExtendTimeout(3 * step)
	t0 := time.Now()
	d.loadDeadline.Store(t0.Add(maxModelLoad).UnixNano())
	loaded := make(chan struct{})
	go func() {
		t := time.NewTicker(step)
		defer t.Stop()
		for {
			select {
			case <-loaded:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				if now.UnixNano() > d.loadDeadline.Load() {
					d.log.Error().Dur("after", time.Since(t0)).Msg("model still loading; no longer extending the start timeout")
					return
				}
				d.notify.ExtendTimeout(3 * step)
				d.notify.Watchdog()
			}
		}
	}()
	defer close(loaded)

	open := d.opts.OpenBackend
	if open == nil {
		open = func(cfg *config.Config) (deblur.Backend, error) {
			return backend.Open(ctx, cfg, backend.Options{
				Log:     log,
				Metrics: reg,
				BuildStarted: func(timeout time.Duration) {
					d.setStatus("building TensorRT engines for %s (see the log)", cfg.Model.Dir)
					// loadBackend's ticker keeps extending the start for the build.
					d.loadDeadline.Store(time.Now().Add(timeout + maxModelLoad).UnixNano())
				},
				BuildProgress: func() { d.notify.ExtendTimeout(30 * time.Second) },
			})
		}
	}
	b, err := open(cfg)
	if err != nil {
		return nil, err
	}
	log.Info().Str("backend", b.Name()).Str("dir", cfg.Model.Dir).Dur("took", time.Since(t0)).Msg("model loaded")
	return b, nil
}

// queueDepth is for the hidiffd_queue_depth gauge: names the watcher holds
// ready for the worker.
func (d *Daemon) queueDepth() float64 {
	p := d.queued.Load()
	if p == nil {
		return 0
	}
	if w, ok := (*p).(interface{ Stats() watch.Stats }); ok {
		return float64(w.Stats().Queued)
	}
	return float64(len((*p).Ready()))
}

// backlog is for the hidiffd_backlog_files gauge.
func (d *Daemon) backlog() float64 { return countDir(d.inbox) }

// statusLine is the STATUS= text: the state, then the counts.
func (d *Daemon) statusLine() string {
	state := "idle"
	switch {
	case d.stopping():
		state = "draining"
	case !d.health.Ready():
		state = "starting"
	}
	return d.statusWith(state)
}

func (d *Daemon) statusWith(state string) string {
	if p := d.problem(); p != "" && state != "stopped" {
		state += " (" + p + ")"
	}
	s := fmt.Sprintf("%s; %d processed, %d failed, %d retried", state,
		d.processed.Load(), d.failed.Load(), d.retried.Load())
	s += fmt.Sprintf(", %d in inbox", int(d.backlog()))
	if w, _ := d.backoff.paused(); w > 0 {
		s += fmt.Sprintf(", output paused %s (retry backoff)", w.Round(time.Second))
	}
	d.workersMu.Lock() // start-up may be assigning w.gpu
	for _, w := range d.workers {
		if g := w.gpu.status(); w.running() && g != "" {
			if len(d.workers) > 1 {
				g = w.name + " " + g
			}
			s += ", " + g
		}
	}
	d.workersMu.Unlock()
	if g := d.degraded(); g != "" {
		s += ", " + g
	}
	return s
}

func (d *Daemon) setStatus(format string, args ...any) {
	d.notify.Status(fmt.Sprintf(format, args...))
}

// housekeeping sends WATCHDOG=1 at half of WATCHDOG_USEC while the frame
// loops are healthy, and refreshes STATUS= when something changed.
func (d *Daemon) housekeeping(ctx context.Context) {
	wd := WatchdogInterval()
	period := 5 * time.Second
	if wd > 0 && wd/2 < period {
		period = wd / 2
	}
	t := time.NewTicker(period)
	defer t.Stop()
	lastStatus := ""
	lastStatusAt := time.Time{}
	lastIntake := ""
	for {
		intake := d.intakeProblem()
		if intake != lastIntake {
			if intake != "" {
				d.log.Error().Str("reason", intake).Msg("not ready: no new frame can be found")
			} else {
				d.log.Info().Msg("intake works again; ready")
			}
			lastIntake = intake
		}
		if wd > 0 {
			stalled := d.stalled(wd)
			switch {
			case stalled != "":
				// No ping: systemd restarts us after WatchdogSec. The frame
				// in work/ is re-queued at start.
				d.log.Error().Str("stage", stalled).Dur("watchdog", wd).Msg("frame loop made no progress; withholding watchdog ping")
			case intake != "":
				// No ping either: a restart recreates a removed inbox/;
				// what it cannot fix stays visible in STATUS= and /readyz.
				d.log.Error().Str("reason", intake).Dur("watchdog", wd).Msg("intake is failing; withholding watchdog ping")
			default:
				d.notify.Watchdog()
			}
		}
		if time.Since(lastStatusAt) >= time.Second {
			if s := d.statusLine(); s != lastStatus {
				d.notify.Status(s)
				lastStatus = s
			}
			lastStatusAt = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// problem is what /healthz and the watchdog check: "" while the daemon can
// do its job, else why it cannot (a restart may help).
func (d *Daemon) problem() string {
	if p := d.intakeProblem(); p != "" {
		return p
	}
	if wd := WatchdogInterval(); wd > 0 {
		if s := d.stalled(wd); s != "" {
			return fmt.Sprintf("the %s loop has made no progress for over %v", s, wd)
		}
	}
	return ""
}

// intakeProblem is why intake cannot find new frames ("" when it can).
func (d *Daemon) intakeProblem() string {
	p := d.queued.Load()
	if p == nil {
		return ""
	}
	if h, ok := (*p).(interface{ Health() error }); ok {
		if err := h.Health(); err != nil {
			return "intake: " + err.Error()
		}
	}
	return ""
}

// clocks track, per frame loop, since when it has worked without progress
// (0 = waiting for input, which is healthy).
type clocks struct {
	decode, encode stageClock // each worker has its network clock
}

type stageClock struct{ since atomic.Int64 }

func (c *stageClock) busy() { c.since.Store(time.Now().UnixNano()) }
func (c *stageClock) idle() { c.since.Store(0) }

// stalled names the first loop busy for longer than limit, or "": the
// decode loop, each running worker's network ("network", or "network
// (gpu1)" with several workers), the encode loop.
func (d *Daemon) stalled(limit time.Duration) string {
	now := time.Now().UnixNano()
	type loop struct {
		name string
		c    *stageClock
	}
	loops := []loop{{StageDecode, &d.clocks.decode}}
	for _, w := range d.runningWorkers() {
		name := "network"
		if len(d.workers) > 1 {
			name += " (" + w.name + ")"
		}
		loops = append(loops, loop{name, &w.clock})
	}
	loops = append(loops, loop{StageEncode, &d.clocks.encode})
	for _, s := range loops {
		if t := s.c.since.Load(); t != 0 && time.Duration(now-t) > limit {
			return s.name
		}
	}
	return ""
}

// errIsCancel reports a cancelled or timed-out context anywhere in err.
func errIsCancel(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
