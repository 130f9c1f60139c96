package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/gpu"
	"hidiffd/logging"
)

// gpuThrottle is the GPU monitor and the throttle policy as the daemon uses
// them. The network loop asks gate before every tile (deblur.Options.Gate);
// a goroutine samples the GPU every gpu.poll so /metrics stays current
// while no frame runs.
//
// Waiting because of the policy is healthy, not a stall: while it waits,
// gate marks the network loop as making progress at every recheck, so the
// systemd watchdog keeps being pinged. A monitor whose Read hangs stops
// those marks and the watchdog restarts us, as for a hung backend call.
type gpuThrottle struct {
	d      *Daemon
	clock  *stageClock // the worker's network clock
	mon    gpu.Monitor
	active bool // gate the network: the backend runs on the GPU
	log    zerolog.Logger
	m      *GPUMetrics

	mu      sync.Mutex // serialises Read and guards the cache
	last    gpu.Readings
	lastAt  time.Time
	lastErr string // the last read error logged ("" = reads work)

	latest atomic.Pointer[gpu.Readings] // for the metrics, read at scrape time
	shown  atomic.Pointer[string]       // the throttle as STATUS= shows it ("" or nil = none)

	// Network-loop only.
	state    gpu.State
	prev     gpu.Decision
	since    time.Time // start of the current throttled state
	throttle string    // reason whose gauge is 1 ("" = none)
}

// openGPU opens the monitor gpu.monitor names for a worker's GPU
// (gpu.device) and registers its metrics. An explicitly requested monitor
// that does not work stops the start; with "auto" a machine without GPU
// telemetry gets "none", which always allows.
func (d *Daemon) openGPU(w *worker) (*gpuThrottle, error) {
	cfg, b := w.cfg, w.backend
	log := w.log.With().Str("component", "gpu").Logger()
	var mon gpu.Monitor
	var err error
	if d.opts.OpenMonitor != nil {
		mon, err = d.opts.OpenMonitor(cfg)
	} else {
		mon, err = gpu.Open(gpu.Options{Kind: cfg.GPU.Monitor, Device: cfg.GPU.Device, Log: logging.KV(log)})
	}
	if err != nil {
		return nil, cfg.Errorf("gpu.monitor", "%w", err)
	}
	g := &gpuThrottle{d: d, clock: &w.clock, mon: mon, log: log}
	if u, ok := b.(deblur.GPUBackend); ok && u.UsesGPU() {
		g.active = true
	}
	r := g.sample(context.Background())
	g.m = d.metrics.RegisterGPU(w.registerer(), mon.Name(), r.Device, mon.Name() != gpu.KindNone, g.readings)
	why := "the backend runs on the GPU"
	if !g.active {
		why = fmt.Sprintf("backend %s does not run on the GPU; readings only", b.Name())
	}
	log.Info().Str("monitor", mon.Name()).Str("device", r.Device).Bool("throttle", g.active).Str("why", why).
		Msg("gpu telemetry")
	return g, nil
}

func (g *gpuThrottle) close() {
	if err := g.mon.Close(); err != nil {
		g.log.Warn().Err(err).Msg("closing the GPU monitor")
	}
}

// readings is the last sample, for the metrics (all unknown before one).
func (g *gpuThrottle) readings() gpu.Readings {
	if p := g.latest.Load(); p != nil {
		return *p
	}
	return gpu.Empty(time.Now())
}

// sample returns a reading no older than half the poll interval, reading
// the monitor if needed. A failed read counts as "all unknown" (the policy
// then allows: a broken monitor must not stop the daemon); the failure is
// logged when it starts, changes or ends, not at every poll.
func (g *gpuThrottle) sample(ctx context.Context) gpu.Readings {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.lastAt.IsZero() && time.Since(g.lastAt) < g.d.cfg.Load().GPU.Poll.Duration/2 {
		return g.last
	}
	r, err := g.mon.Read(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return gpu.Empty(time.Now()) // shutting down: not the GPU's fault
	case err != nil:
		if msg := err.Error(); msg != g.lastErr {
			g.log.Warn().Err(err).Msg("gpu read failed; readings unknown until it works again")
			g.lastErr = msg
		}
		dev := r.Device
		r = gpu.Empty(time.Now())
		r.Device = dev
	case g.lastErr != "":
		g.log.Info().Msg("gpu read works again")
		g.lastErr = ""
	}
	g.last, g.lastAt = r, time.Now()
	g.latest.Store(&r)
	return r
}

// poll keeps the metrics current between frames.
func (g *gpuThrottle) poll(ctx context.Context) {
	if g.mon.Name() == gpu.KindNone {
		return
	}
	for {
		period := g.d.cfg.Load().GPU.Poll.Duration
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
		g.sample(ctx)
	}
}

// GPUPolicy is the [gpu] configuration as the policy takes it, for a tile
// edge of want (doctor shows the decision with it too).
func GPUPolicy(c config.GPU, want int) gpu.PolicyConfig {
	return gpu.PolicyConfig{
		Poll:       c.Poll.Duration,
		TempPauseC: float64(c.TempPauseC), TempResumeC: float64(c.TempResumeC), SlowdownMarginC: float64(c.SlowdownMarginC),
		MinFreeMiB: float64(c.MinFreeMiB), FreeHysteresisMiB: float64(c.FreeHysteresisMiB), ShrinkFreeMiB: float64(c.ShrinkFreeMiB),
		Tile: want, MinTile: c.MinTile,
		MaxOtherUtilPercent: float64(c.MaxOtherUtilPercent), MaxOtherMemMiB: float64(c.MaxOtherMemoryMiB),
		OnThermal: c.OnThermalEvent, OnPowerCap: c.OnPowerEvent, OnHWSlowdown: c.OnHWSlowdown,
		SlowPause: c.SlowPause.Duration, ResumeHold: c.ResumeHold.Duration,
	}
}

// errDrainWhileWaiting ends a frame that waits for the GPU when a drain
// starts: the frame goes back to inbox/ at once instead of holding the
// drain until drain_timeout. It wraps context.Canceled, which the network
// loop treats as "release, not fail".
var errDrainWhileWaiting = fmt.Errorf("draining while waiting for the GPU: %w", context.Canceled)

// gate is deblur.Options.Gate: it blocks while the policy says Wait, sleeps
// once for Slow, and returns the tile edge the policy allows.
func (g *gpuThrottle) gate(ctx context.Context, want int) (int, error) {
	for {
		cfg := g.d.cfg.Load().GPU
		r := g.sample(ctx)
		now := time.Now()
		dec, st := gpu.Decide(r, GPUPolicy(cfg, want), g.state, now)
		g.state = st
		g.observe(dec, r, now)
		switch dec.Action {
		case gpu.Wait, gpu.Slow:
			// Waiting for the GPU is the loop doing its job: tell the
			// watchdog so (see the type's comment).
			g.clock.busy()
			t := time.NewTimer(dec.Recheck)
			t0 := time.Now()
			select {
			case <-ctx.Done():
				t.Stop()
				g.m.ThrottledSeconds.WithLabelValues(dec.Reason).Add(time.Since(t0).Seconds())
				return 0, ctx.Err()
			case <-g.d.stop:
				t.Stop()
				g.m.ThrottledSeconds.WithLabelValues(dec.Reason).Add(time.Since(t0).Seconds())
				return 0, errDrainWhileWaiting
			case <-t.C:
			}
			g.m.ThrottledSeconds.WithLabelValues(dec.Reason).Add(time.Since(t0).Seconds())
			g.clock.busy()
			if dec.Action == gpu.Slow {
				return dec.TileEdge, nil
			}
		default:
			return dec.TileEdge, nil
		}
	}
}

// observe updates the throttle metrics and logs a change of decision (not
// every repetition: a wait is rechecked every poll).
func (g *gpuThrottle) observe(dec gpu.Decision, r gpu.Readings, now time.Time) {
	reason := ""
	if dec.Action == gpu.Wait || dec.Action == gpu.Slow {
		reason = dec.Reason
	}
	g.setThrottled(reason)
	shown, limit := "", 0.0
	if dec.Action != gpu.Run {
		shown = fmt.Sprintf("gpu: %s (%s: %s)", dec.Action, dec.Reason, dec.Detail)
		limit = float64(dec.TileEdge)
	}
	g.shown.Store(&shown)
	g.m.TileLimit.Set(limit)

	// While running, the edge follows each frame's size (whole-frame
	// tiles): not a change of state.
	if dec.Action == g.prev.Action && dec.Reason == g.prev.Reason && (dec.Action == gpu.Run || dec.TileEdge == g.prev.TileEdge) {
		return
	}
	e := g.log.Info().Str("action", dec.Action.String()).Int("tile", dec.TileEdge)
	if dec.Reason != "" {
		e = e.Str("reason", dec.Reason).Str("detail", dec.Detail)
	}
	if gpu.Known(r.TempC) {
		e = e.Float64("temp_c", r.TempC)
	}
	if gpu.Known(r.MemFree) {
		e = e.Float64("free_mib", r.MemFree/(1<<20))
	}
	if g.prev.Action != gpu.Run && !g.since.IsZero() {
		e = e.Str("previous", g.prev.Action.String()).Dur("previous_for", now.Sub(g.since))
	}
	e.Msg("gpu throttle")
	g.prev, g.since = dec, now
}

// status is the throttle for STATUS= ("" when the GPU does not hold us back).
func (g *gpuThrottle) status() string {
	if g == nil {
		return ""
	}
	if s := g.shown.Load(); s != nil {
		return *s
	}
	return ""
}

// setThrottled makes the gauge of reason 1 and the previous one 0.
func (g *gpuThrottle) setThrottled(reason string) {
	if reason == g.throttle {
		return
	}
	if g.throttle != "" {
		g.m.Throttled.WithLabelValues(g.throttle).Set(0)
	}
	if reason != "" {
		g.m.Throttled.WithLabelValues(reason).Set(1)
	}
	g.throttle = reason
}

// frameDone clears the throttle gauge after a frame: a slow-down is applied
// between tiles, and an idle daemon is not throttled.
func (g *gpuThrottle) frameDone(st deblur.Stats, err error) {
	g.setThrottled("")
	g.shown.Store(new(string))
	if st.OOMRetries > 0 {
		g.m.OOMRetries.Add(float64(st.OOMRetries))
		e := g.log.Warn().Int("retries", st.OOMRetries)
		if err == nil {
			e.Int("tile", max(st.TileW, st.TileH)).Msg("gpu out of memory: the frame ran with smaller tiles")
		} else if deblur.IsOutOfMemory(err) {
			e.Msg("gpu out of memory even at gpu.min_tile: frame failed")
		} else {
			e.Msg("gpu out of memory: retried with smaller tiles, then failed otherwise")
		}
	}
}

// gateFor returns the hook for deblur.Options.Gate (nil: do not gate).
func (g *gpuThrottle) gateFor() func(context.Context, int) (int, error) {
	if g == nil || !g.active {
		return nil
	}
	return g.gate
}

// isDrainWait reports a frame released because a drain began while it
// waited for the GPU.
func isDrainWait(err error) bool { return errors.Is(err, errDrainWhileWaiting) }
