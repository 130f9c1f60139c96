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
	"hidiffd/logging"
	"hidiffd/ort"
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
	Clock Clock
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

	spool   *spool.Spool
	backend deblur.Backend
	gpu     *gpuThrottle // GPU telemetry and the throttle gate
	intake  Intake
	inbox   string                 // the spool's inbox/, known before the spool is open
	queued  atomic.Pointer[Intake] // d.intake once set, for the metrics goroutine

	backoff backoff
	clocks  clocks
	mem     memBudget

	// loadDeadline (unix nanoseconds) is how long loadBackend keeps asking
	// systemd for more start-up time; an engine build pushes it out.
	loadDeadline atomic.Int64

	// Counters for STATUS= (the metrics hold the same, but reading a
	// Prometheus counter back is clumsy).
	processed, failed, retried atomic.Int64

	stopOnce   sync.Once
	drainTimer *time.Timer   // cancels the frame in flight when the drain takes too long
	stop       chan struct{} // closed: drain (stop intake, finish the frame in flight)
	cancelWork context.CancelFunc
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
		opts.Clock = systemClock{}
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

func (d *Daemon) run(ctx context.Context) (err error) {
	cfg := d.cfg.Load()
	log := d.log
	log.Info().Str("version", d.opts.Version).Str("config", cfg.Path()).Int("pid", os.Getpid()).Msg("hidiffd starting")
	d.health.SetNotReady("starting")
	if err := backend.CheckBuilt(cfg); err != nil {
		return err // before the spool and the port: nothing to undo
	}

	// Read by the HTTP handlers and STATUS= lines from other goroutines while
	// start-up assigns d.spool and d.intake: these two never change.
	d.inbox = filepath.Join(filepath.Clean(cfg.Spool.Root), spool.Inbox)
	d.metrics = NewMetrics(d.opts.Version, d.queueDepth, d.backlog, func() float64 {
		if d.health.Serving() && !d.stopping() {
			return 1
		}
		return 0
	})
	d.health.SetCheck(d.problem)
	d.registerMemoryMetrics()

	// Signals first: a SIGTERM during a long model load must stop the load
	// cleanly rather than kill the process with the default action.
	sigs := d.opts.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		defer signal.Stop(ch)
		sigs = ch
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	d.cancelWork = cancelWork
	startCtx, cancelStart := context.WithCancel(ctx) // cancelled by a signal during start-up
	defer cancelStart()
	sigDone := make(chan struct{})
	go func() {
		defer close(sigDone)
		d.handleSignals(ctx, sigs, cancelStart)
	}()
	defer func() { cancel(); <-sigDone }()

	if cfg.HTTP.Listen != "" {
		addr, httpDone, err := serveHTTP(ctx, cfg.HTTP.Listen, d.health.Handler(d.metrics), log)
		if err != nil {
			return err
		}
		defer func() { cancel(); <-httpDone }()
		log.Info().Str("addr", addr.String()).Msg("http listening (/metrics /healthz /readyz)")
		if d.opts.OnListen != nil {
			d.opts.OnListen(addr)
		}
	}

	// Spool: create the folders, take the lock, re-queue work/.
	d.setStatus("recovering spool %s", cfg.Spool.Root)
	d.spool, err = spool.Open(cfg.Spool.Root, spool.Options{
		KeepOriginals: cfg.Spool.KeepOriginals,
		Lock:          true,
		Log:           logging.KV(log.With().Str("component", "spool").Logger()),
	})
	if err != nil {
		return cfg.Errorf("spool.root", "%v", err)
	}
	defer d.spool.Close()
	requeued, err := d.spool.Recover()
	if err != nil {
		// Recover keeps going past single files; what it could not move
		// stays where it is and is retried at the next start.
		log.Error().Err(err).Msg("spool recovery incomplete")
	}
	log.Info().Str("root", d.spool.Root()).Int("requeued", requeued).Msg("spool recovered")

	// Model.
	if startCtx.Err() != nil {
		log.Info().Msg("stopped during start-up")
		return nil
	}
	d.backend, err = d.loadBackend(startCtx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.backend.Close(); cerr != nil {
			log.Error().Err(cerr).Msg("closing backend")
		}
	}()
	if startCtx.Err() != nil {
		log.Info().Msg("stopped during start-up")
		return nil
	}
	info := d.backend.Info()
	d.metrics.BackendInfo.WithLabelValues(d.backend.Name(), info.Model, info.Preset, info.Version).Set(1)

	// GPU telemetry and the throttle gate; its poller keeps /metrics
	// current between frames and stops before the monitor closes.
	if d.gpu, err = d.openGPU(cfg, d.backend); err != nil {
		return err
	}
	gpuCtx, stopGPU := context.WithCancel(ctx)
	gpuDone := make(chan struct{})
	go func() { defer close(gpuDone); d.gpu.poll(gpuCtx) }()
	defer func() { stopGPU(); <-gpuDone; d.gpu.close() }()

	pipe, err := deblur.NewPipeline(progressBackend{d.backend, &d.clocks.network}, d.pipelineOptions(cfg))
	if err != nil {
		return cfg.Errorf("model.tile", "%v", err)
	}
	// One tile through the network: the runtime's working memory for it is
	// allocated now (and kept), so it is measured below as the model's,
	// not charged to the first frame; the first frame is faster too.
	if !d.opts.SkipWarmup {
		d.warmUp(startCtx, pipe, cfg)
		if startCtx.Err() != nil {
			log.Info().Msg("stopped during start-up")
			return nil
		}
	}
	// What the model and runtime hold now is outside the frames' budget.
	if err := d.measureFixed(); err != nil {
		return err
	}

	// Intake.
	wlog := logging.KV(log.With().Str("component", "watch").Logger())
	if d.opts.NewIntake != nil {
		d.intake, err = d.opts.NewIntake(d.inbox, cfg, wlog)
	} else {
		d.intake, err = watch.New(d.inbox, watch.Options{
			Settle:    cfg.Spool.Settle.Duration,
			Rescan:    cfg.Spool.Rescan.Duration,
			QueueSize: cfg.Spool.QueueSize,
		}, wlog)
	}
	if err != nil {
		return err
	}
	d.queued.Store(&d.intake)
	intakeCtx, stopIntake := context.WithCancel(context.Background())
	defer stopIntake()
	intakeDone := make(chan struct{})
	var intakeErr atomic.Pointer[error]
	go func() {
		defer close(intakeDone)
		err := d.intake.Run(intakeCtx)
		if intakeCtx.Err() == nil {
			// The watcher gave up on its own: without intake the daemon
			// would look healthy and do nothing. Drain and exit non-zero so
			// systemd restarts it.
			if err == nil {
				err = errors.New("intake stopped unexpectedly")
			}
			intakeErr.Store(&err)
			log.Error().Err(err).Msg("intake stopped; shutting down")
			d.beginDrain("intake stopped")
		}
	}()

	// The frame pipeline: decode -> network -> encode, one goroutine each.
	netCh := make(chan *frame)
	encCh := make(chan *frame, 1)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.decodeLoop(netCh) }()
	go func() { defer wg.Done(); d.networkLoop(workCtx, pipe, netCh, encCh) }()
	go func() { defer wg.Done(); d.encodeLoop(encCh) }()

	d.health.SetReady()
	d.notify.Ready(d.statusLine())
	log.Info().Str("backend", d.backend.Name()).Str("model", info.Model).Str("preset", info.Preset).
		Str("model_version", info.Version).Int("tile", cfg.Model.Tile).Msg("ready")

	wdDone := make(chan struct{})
	go func() { defer close(wdDone); d.housekeeping(ctx) }()

	// Wait for the drain to start (signal or ctx), then for the pipeline.
	select {
	case <-d.stop:
	case <-ctx.Done():
		d.beginDrain("context cancelled")
	}
	stopIntake()
	wg.Wait()
	d.drainTimer.Stop()
	<-intakeDone
	cancel()
	<-wdDone
	d.notify.Status(d.statusWith("stopped"))
	log.Info().Int64("processed", d.processed.Load()).Int64("failed", d.failed.Load()).
		Int64("retried", d.retried.Load()).Msg("stopped")
	if p := intakeErr.Load(); p != nil {
		return fmt.Errorf("intake: %w", *p)
	}
	return nil
}

// handleSignals turns SIGTERM/SIGINT into a drain (a second one cancels the
// frame in flight at once) and SIGHUP into a reload.
func (d *Daemon) handleSignals(ctx context.Context, sigs <-chan os.Signal, cancelStart context.CancelFunc) {
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
				cancelStart()
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
			if _, err := ort.Inspect(next.Model.Dir); err != nil {
				d.log.Error().Err(next.Errorf("model.dir", "%v", err)).
					Msg("the reloaded model.dir cannot be loaded: a restart would fail; the running model stays")
			}
		}
	}
	d.log.Info().Str("config", path).Strs("applied", applied).Strs("needs_restart", restart).Msg("configuration reloaded")
}

// loadBackend opens the configured backend, keeping systemd patient while it
// loads (EXTEND_TIMEOUT_USEC, plus watchdog pings in case the watchdog is
// already armed) for at most maxModelLoad.
func (d *Daemon) loadBackend(ctx context.Context, cfg *config.Config) (deblur.Backend, error) {
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
				Log:     d.log,
				Metrics: d.metrics.Registry,
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
	d.log.Info().Str("backend", b.Name()).Str("dir", cfg.Model.Dir).Dur("took", time.Since(t0)).Msg("model loaded")
	return b, nil
}

// pipelineOptions are the live model keys plus the GPU gate and the
// out-of-memory floor (gpu.min_tile).
func (d *Daemon) pipelineOptions(cfg *config.Config) deblur.Options {
	return deblur.Options{Tile: cfg.Model.Tile, Overlap: cfg.Model.Overlap, Seed: cfg.Model.Seed,
		MinTile: cfg.GPU.MinTile, Gate: d.gpu.gateFor()}
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
	if g := d.gpu.status(); g != "" {
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
			stalled := d.clocks.stalled(wd)
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
		if s := d.clocks.stalled(wd); s != "" {
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
	decode, network, encode stageClock
}

type stageClock struct{ since atomic.Int64 }

func (c *stageClock) busy() { c.since.Store(time.Now().UnixNano()) }
func (c *stageClock) idle() { c.since.Store(0) }

// stalled names the first loop busy for longer than limit, or "".
func (c *clocks) stalled(limit time.Duration) string {
	now := time.Now().UnixNano()
	for _, s := range []struct {
		name string
		c    *stageClock
	}{{StageDecode, &c.decode}, {"network", &c.network}, {StageEncode, &c.encode}} {
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
