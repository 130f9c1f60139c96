package daemon

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/imageio"
)

// Memory per pixel of a frame on its way through the daemon, besides the
// decoder's own image (imageio.Info.SampleBytes, twice for an interlaced
// PNG) and the file's bytes, which are read whole before decoding:
//
//	decode:  the file + the decoder's image + the input planes (float32 RGB, 12)
//	network: the input planes + the output planes (12 + 12)
//	encode:  the output planes + an 8- or 16-bit RGBA image (12 + 4 or 8)
//
// A frame is charged file + pixels x (decoder + 28) for its whole way: 24
// live at the network, plus 4 for the network's per-tile output tensors
// and the collector's slack (scripts/benchmarks/memcost measures what is
// live: 26 to 29 bytes per pixel with GOGC=5). The daemon runs the garbage
// collector where a frame's big buffers become garbage, and its soft memory
// limit follows these estimates, so the process stays within them.
const planeBytesPerPixel = 28

// untiledNetworkBytesPerPixel is the network's own memory per pixel when
// model.tile is 0 (the whole frame at once): ONNX Runtime's arena for the
// `s` model on the CPU grows by about 1740 bytes per pixel from 640x360 to
// 1280x720 (scripts/benchmarks/memcost -model build/models/s -untiled).
// Larger models need more; tiles bound it instead (the warm-up measures
// one tile's share at start).
const untiledNetworkBytesPerPixel = 2000

// frameCost estimates the peak memory of one frame from its header.
func frameCost(info imageio.Info, tile int) int64 {
	px := info.Pixels()
	dec := int64(info.SampleBytes)
	if info.Interlaced {
		dec *= 2
	}
	cost := info.Size + px*(dec+planeBytesPerPixel)
	if tile == 0 {
		cost += px * untiledNetworkBytesPerPixel
	}
	return cost
}

// describeCost says how a frame's estimate was made, for its failure reason.
func describeCost(info imageio.Info, tile int) string {
	dec := info.SampleBytes
	if info.Interlaced {
		dec *= 2
	}
	kind := fmt.Sprintf("%d-bit %s", info.BitDepth, strings.ToUpper(info.Format))
	if info.Interlaced {
		kind += " (interlaced)"
	}
	s := fmt.Sprintf("%dx%d %s: %d bytes per pixel + the %s file", info.Width, info.Height, kind,
		dec+planeBytesPerPixel, mib(info.Size))
	if tile == 0 {
		s += fmt.Sprintf(" + %d bytes per pixel for the network (model.tile = 0)", untiledNetworkBytesPerPixel)
	}
	return s
}

// mib formats bytes as MiB, rounded up.
func mib(n int64) string { return strconv.FormatInt((n+(1<<20)-1)>>20, 10) + " MiB" }

// memSlack is kept free of frames: the Go runtime's own churn, goroutine
// stacks, HTTP and log buffers, and the small tensors of the network calls.
const memSlack = 64 << 20

// memBudget accounts the estimated memory of the frames in flight (claimed
// and not yet finished) against what limits.memory_mib leaves beside the
// model and runtime. A frame waits until it fits; with nothing in flight
// every frame fits that the caller let through (its cost within capacity).
//
// The Go runtime's soft memory limit follows the reservations (what Go held
// at start, plus the frames' estimates, plus memSlack), so the garbage of
// one frame is collected before it can push the process over the budget,
// rather than when the heap has doubled.
type memBudget struct {
	mu       sync.Mutex
	used     int64
	inFlight int
	freed    chan struct{} // closed and replaced on every release
	fixed    int64         // the process's resident memory at start (model, runtime)
	goBase   int64         // the Go runtime's share of fixed
	follow   bool          // set the Go soft limit (no GOMEMLIMIT in the environment)
}

// tryReserve charges cost if it fits in capacity; otherwise it returns a
// channel that is closed when some frame releases its share.
func (m *memBudget) tryReserve(cost, capacity int64) (bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inFlight == 0 || m.used+cost <= capacity {
		m.used += cost
		m.inFlight++
		m.applyLocked()
		return true, nil
	}
	if m.freed == nil {
		m.freed = make(chan struct{})
	}
	return false, m.freed
}

func (m *memBudget) release(cost int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used -= cost
	m.inFlight--
	m.applyLocked()
	if m.freed != nil {
		close(m.freed)
		m.freed = nil
	}
}

func (m *memBudget) applyLocked() {
	if m.follow {
		debug.SetMemoryLimit(m.goBase + m.used + memSlack)
	}
}

func (m *memBudget) reserved() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// capacity is what the budget leaves for frames.
func (d *Daemon) memCapacity() int64 {
	return int64(d.cfg.Load().Limits.MemoryMiB)<<20 - d.mem.fixed - memSlack
}

// measureFixed records what the process holds once the model is loaded:
// that part of the budget is not the frames'. It refuses a budget that
// leaves less than 64 MiB for frames.
func (d *Daemon) measureFixed() error {
	runtime.GC()
	d.mem.mu.Lock()
	d.mem.fixed = residentBytes()
	d.mem.goBase = goResident()
	d.mem.follow = os.Getenv("GOMEMLIMIT") == ""
	d.mem.applyLocked()
	d.mem.mu.Unlock()
	budget := int64(d.cfg.Load().Limits.MemoryMiB) << 20
	if c := d.memCapacity(); c < 64<<20 {
		return d.cfg.Load().Errorf("limits.memory_mib", "the model and runtime already take %s (and %s stay free); "+
			"the budget must leave at least 64 MiB for frames", mib(d.mem.fixed), mib(memSlack))
	}
	d.log.Info().Str("budget", mib(budget)).Str("model_and_runtime", mib(d.mem.fixed)).
		Str("for_frames", mib(d.memCapacity())).Bool("go_limit_follows", d.mem.follow).Msg("memory budget")
	return nil
}

// warmUp runs one tile of zeros (model.tile square) through the network.
// A failure is logged, not fatal: the frames will say what is wrong.
func (d *Daemon) warmUp(ctx context.Context, pipe *deblur.Pipeline, cfg *config.Config) {
	t := cfg.Model.Tile
	if t == 0 {
		return // the network's memory is charged per frame
	}
	t0 := time.Now()
	d.setStatus("warming up the network (one %dx%d tile)", t, t)
	_, _, err := pipe.Run(ctx, deblur.Image{W: t, H: t, Pix: make([]float32, 3*t*t)})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("network warm-up failed")
		}
		return
	}
	d.log.Info().Int("tile", t).Dur("took", time.Since(t0)).Msg("network warmed up")
}

// remeasure raises the fixed part when the process holds more outside the
// Go heap than at start (a larger tile after a reload, a runtime that grew
// its arena): called when no frame is in flight.
func (d *Daemon) remeasure() {
	d.mem.mu.Lock()
	defer d.mem.mu.Unlock()
	if d.mem.inFlight != 0 {
		return
	}
	if now := residentBytes() - goResident() + d.mem.goBase; now > d.mem.fixed+(16<<20) {
		d.log.Info().Str("was", mib(d.mem.fixed)).Str("now", mib(now)).
			Msg("the model and runtime hold more memory than at start; the frames' share of the budget shrinks")
		d.mem.fixed = now
	}
}

// registerMemoryMetrics adds the budget's gauges to /metrics.
func (d *Daemon) registerMemoryMetrics() {
	g := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	d.metrics.Registry.MustRegister(
		g("hidiffd_memory_budget_bytes", "limits.memory_mib in bytes.",
			func() float64 { return float64(int64(d.cfg.Load().Limits.MemoryMiB) << 20) }),
		g("hidiffd_memory_fixed_bytes", "Memory the model and runtime hold, measured at start (after one tile's warm-up).",
			func() float64 { d.mem.mu.Lock(); defer d.mem.mu.Unlock(); return float64(d.mem.fixed) }),
		g("hidiffd_memory_reserved_bytes", "Estimated peak memory of the frames in flight, charged to the budget.",
			func() float64 { return float64(d.mem.reserved()) }),
	)
}

// residentBytes is the process's resident set size now (0 if unknown).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

// goResident is the memory the Go runtime holds from the OS and has not
// released: what its soft memory limit counts.
func goResident() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}
