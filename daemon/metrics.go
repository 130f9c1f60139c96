package daemon

import (
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"hidiffd/gpu"
	"hidiffd/watch"
)

// Stage names used in logs, metrics and error.json.
const (
	StageDecode      = "decode"
	StagePrior       = "prior"
	StageTransformer = "transformer"
	StageEncode      = "encode"
	StageTotal       = "total"
)

// Metrics is the daemon's Prometheus instrumentation on its own registry, so
// tests can build several daemons in one process and the exposition holds
// only what we mean to publish (plus the standard Go and process
// collectors).
type Metrics struct {
	Registry *prometheus.Registry

	Processed   prometheus.Counter
	Failed      *prometheus.CounterVec // label stage
	Retried     prometheus.Counter
	Stage       *prometheus.HistogramVec // label stage
	BackendInfo *prometheus.GaugeVec
	Reloads     *prometheus.CounterVec // label result

	// Per worker (label worker: "gpu0", "cpu1"; one worker has one too).
	WorkerUp     *prometheus.GaugeVec   // 1 while it takes frames, 0 once stopped
	WorkerFrames *prometheus.CounterVec // label result: ok, failed, requeued (its backend failed; back to inbox/)
}

// NewMetrics registers every metric. queueDepth, backlog and ready are read
// at scrape time (nil: report 0) so they cost nothing between scrapes.
func NewMetrics(version string, queueDepth, backlog, ready func() float64) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Processed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hidiffd_images_processed_total",
			Help: "Images deblurred and written to out/.",
		}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hidiffd_images_failed_total",
			Help: "Images moved to failed/, by the stage that failed.",
		}, []string{"stage"}),
		Retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hidiffd_images_retried_total",
			Help: "Images returned to inbox/ after a transient error (disk full, read-only, permission) or a drain deadline.",
		}),
		Stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hidiffd_stage_duration_seconds",
			Help: "Time per image in each stage: decode, prior, transformer, encode, total.",
			// 5 ms .. ~160 s: a small JPEG decode up to a large frame on CPU.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"stage"}),
		BackendInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hidiffd_backend_info",
			Help: "The loaded backend and model (value 1).",
		}, []string{"backend", "model", "preset", "version"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hidiffd_config_reloads_total",
			Help: "SIGHUP configuration reloads, by result (ok, error).",
		}, []string{"result"}),
		WorkerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hidiffd_worker_up",
			Help: "1 while the worker (one backend, and its GPU, each) takes frames; 0 once it stopped: its backend failed, or it was left out at start (backend or GPU monitor did not open, or a GPU worker came up on the CPU).",
		}, []string{"worker"}),
		WorkerFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hidiffd_worker_frames_total",
			Help: "Frames through a worker's network, by result: ok, failed (the frame's fault), requeued (the worker's backend failed; back to inbox/ for the others).",
		}, []string{"worker", "result"}),
	}
	gaugeFunc := func(name, help string, f func() float64) prometheus.Collector {
		if f == nil {
			f = func() float64 { return 0 }
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		m.Processed, m.Failed, m.Retried, m.Stage, m.BackendInfo, m.Reloads, m.WorkerUp, m.WorkerFrames,
		gaugeFunc("hidiffd_ready", "1 while /readyz answers 200: model loaded, spool recovered, intake scanning the inbox, not draining.", ready),
		gaugeFunc("hidiffd_queue_depth", "Files accepted by intake and waiting for the worker.", queueDepth),
		gaugeFunc("hidiffd_backlog_files", "Files in inbox/ (read at scrape time).", backlog),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "hidiffd_build_info",
			Help:        "Build information (value 1).",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Pre-create the label values so dashboards see zeros, not gaps.
	for _, s := range []string{StageDecode, StagePrior, StageTransformer, StageEncode, StageTotal} {
		m.Stage.WithLabelValues(s)
	}
	for _, s := range []string{"probe", StageDecode, "pipeline", StageEncode, "spool"} {
		m.Failed.WithLabelValues(s)
	}
	m.Reloads.WithLabelValues("ok")
	m.Reloads.WithLabelValues("error")
	return m
}

// observe records one stage's duration.
func (m *Metrics) observe(stage string, d time.Duration) {
	m.Stage.WithLabelValues(stage).Observe(d.Seconds())
}

// countDir counts the entries of dir without sorting or stat-ing them: the
// backlog gauge must stay cheap with 100 000 files waiting. Names starting
// the watcher ignores (dotfiles, *.tmp, *.part: files still being written)
// are not counted.
func countDir(dir string) float64 {
	f, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(4096)
		for _, nm := range names {
			if !watch.Ignored(nm) {
				n++
			}
		}
		if err != nil {
			return float64(n)
		}
	}
}

// GPUMetrics are the throttle and out-of-memory metrics the network loop
// updates; the readings themselves are gauges read at scrape time.
type GPUMetrics struct {
	Throttled        *prometheus.GaugeVec   // label reason: 1 while the network waits or slows for it
	ThrottledSeconds *prometheus.CounterVec // label reason
	TileLimit        prometheus.Gauge       // tile edge the policy allows; 0 = no limit
	OOMRetries       prometheus.Counter
}

// RegisterGPU registers the GPU metrics. With telemetry (monitor not
// "none"), the reading gauges call readings at scrape time; a reading the
// GPU does not report is NaN. reg is the worker's registerer (its label
// when the daemon has several).
func (m *Metrics) RegisterGPU(reg prometheus.Registerer, monitor, device string, telemetry bool, readings func() gpu.Readings) *GPUMetrics {
	g := &GPUMetrics{
		Throttled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hidiffd_gpu_throttled",
			Help: "1 while the network waits (or slows down) before a tile for this reason: temperature, memory, other_processes, clock_thermal, clock_power, clock_hw_slowdown.",
		}, []string{"reason"}),
		ThrottledSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hidiffd_gpu_throttled_seconds_total",
			Help: "Time the network spent waiting or slowed down by the GPU throttle policy, by reason.",
		}, []string{"reason"}),
		TileLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hidiffd_gpu_tile_limit_pixels",
			Help: "Tile edge the GPU policy allows while memory is short (0: no limit), as of the last tile.",
		}),
		OOMRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hidiffd_gpu_oom_retries_total",
			Help: "Frames run again with smaller tiles after the backend ran out of GPU memory.",
		}),
	}
	reg.MustRegister(g.Throttled, g.ThrottledSeconds, g.TileLimit, g.OOMRetries)
	for _, r := range gpu.Reasons {
		g.Throttled.WithLabelValues(r)
		g.ThrottledSeconds.WithLabelValues(r)
	}
	if !telemetry {
		return g
	}
	gauge := func(name, help string, labels prometheus.Labels, f func(gpu.Readings) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return f(readings()) })
	}
	event := func(e gpu.ClockEvents) func(gpu.Readings) float64 {
		return func(r gpu.Readings) float64 {
			switch {
			case !r.EventsKnown:
				return gpu.Unknown
			case r.Events&e != 0:
				return 1
			}
			return 0
		}
	}
	const utilHelp = "GPU utilisation in percent: kind gpu (kernels running), memory (memory busy), other_processes (SM share of other processes)."
	const eventHelp = "1 while the GPU reports this clock-event (throttle) reason; NaN where it cannot tell (Jetson)."
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "hidiffd_gpu_info",
			Help:        "The GPU telemetry source and device (value 1).",
			ConstLabels: prometheus.Labels{"monitor": monitor, "device": device},
		}, func() float64 { return 1 }),
		gauge("hidiffd_gpu_temperature_celsius", "GPU temperature.", nil, func(r gpu.Readings) float64 { return r.TempC }),
		gauge("hidiffd_gpu_slowdown_temperature_celsius", "Temperature at which the GPU slows itself down (NVML threshold or Jetson passive trip).", nil,
			func(r gpu.Readings) float64 { return r.SlowdownC }),
		gauge("hidiffd_gpu_memory_total_bytes", "GPU memory (on a Jetson: system memory, shared with the CPU).", nil, func(r gpu.Readings) float64 { return r.MemTotal }),
		gauge("hidiffd_gpu_memory_free_bytes", "Free GPU memory (on a Jetson: MemAvailable).", nil, func(r gpu.Readings) float64 { return r.MemFree }),
		gauge("hidiffd_gpu_memory_used_bytes", "Used GPU memory.", nil, func(r gpu.Readings) float64 { return r.MemUsed }),
		gauge("hidiffd_gpu_memory_other_processes_bytes", "GPU memory held by other processes (NVML).", nil, func(r gpu.Readings) float64 { return r.OtherMemUsed }),
		gauge("hidiffd_gpu_utilization_percent", utilHelp, prometheus.Labels{"kind": "gpu"}, func(r gpu.Readings) float64 { return r.GPUUtil }),
		gauge("hidiffd_gpu_utilization_percent", utilHelp, prometheus.Labels{"kind": "memory"}, func(r gpu.Readings) float64 { return r.MemUtil }),
		gauge("hidiffd_gpu_utilization_percent", utilHelp, prometheus.Labels{"kind": "other_processes"}, func(r gpu.Readings) float64 { return r.OtherUtil }),
		gauge("hidiffd_gpu_power_watts", "GPU power draw (on a Jetson: the INA3221 rail that feeds the GPU).", nil, func(r gpu.Readings) float64 { return r.PowerW }),
		gauge("hidiffd_gpu_clock_event", eventHelp, prometheus.Labels{"event": "thermal"}, event(gpu.EventThermal)),
		gauge("hidiffd_gpu_clock_event", eventHelp, prometheus.Labels{"event": "power_cap"}, event(gpu.EventPowerCap)),
		gauge("hidiffd_gpu_clock_event", eventHelp, prometheus.Labels{"event": "hw_slowdown"}, event(gpu.EventHWSlowdown)),
	)
	return g
}
