package daemon

import (
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
	Ready       prometheus.Gauge
	Reloads     *prometheus.CounterVec // label result
}

// NewMetrics registers every metric. queueDepth and backlog are read at
// scrape time (nil: report 0) so they cost nothing between scrapes.
func NewMetrics(version string, queueDepth, backlog func() float64) *Metrics {
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
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hidiffd_ready",
			Help: "1 once the model is loaded and the spool recovered; 0 before and while draining.",
		}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hidiffd_config_reloads_total",
			Help: "SIGHUP configuration reloads, by result (ok, error).",
		}, []string{"result"}),
	}
	gaugeFunc := func(name, help string, f func() float64) prometheus.Collector {
		if f == nil {
			f = func() float64 { return 0 }
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(
		m.Processed, m.Failed, m.Retried, m.Stage, m.BackendInfo, m.Ready, m.Reloads,
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
