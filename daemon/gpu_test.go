package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/gpu"
)

// fakeMonitor is a GPU monitor whose readings the test sets.
type fakeMonitor struct {
	mu    sync.Mutex
	r     gpu.Readings
	reads atomic.Int64 // Read calls so far
}

func newFakeMonitor(set func(*gpu.Readings)) *fakeMonitor {
	f := &fakeMonitor{r: gpu.Empty(time.Now())}
	f.r.Device = "fake GPU"
	f.r.MemTotal, f.r.MemFree = 16<<30, 12<<30
	f.set(set)
	return f
}

func (f *fakeMonitor) set(fn func(*gpu.Readings)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fn != nil {
		fn(&f.r)
	}
}

func (f *fakeMonitor) Name() string { return "fake" }
func (f *fakeMonitor) Close() error { return nil }
func (f *fakeMonitor) Read(context.Context) (gpu.Readings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads.Add(1)
	r := f.r
	r.Time = time.Now()
	return r, nil
}

// fakeGPUBackend is the harness's identity network presented as running on
// the GPU, so the daemon gates it; above oomAbove pixels of tile edge
// (0 = never) its Transform fails the way a CUDA allocation does.
type fakeGPUBackend struct {
	*fakeBackend
	oomAbove atomic.Int64
}

func (f *fakeGPUBackend) UsesGPU() bool { return true }

func (f *fakeGPUBackend) Transform(ctx context.Context, blur, prior deblur.Tensor) (deblur.Tensor, error) {
	if lim := f.oomAbove.Load(); lim > 0 && max(blur.Shape[2], blur.Shape[3]) > lim {
		return deblur.Tensor{}, fmt.Errorf("fake: cudaMalloc failed: %w", deblur.ErrOutOfMemory)
	}
	return f.fakeBackend.Transform(ctx, blur, prior)
}

func metricFloat(t *testing.T, in *instance, sample string) float64 {
	t.Helper()
	v := in.metric(sample)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return -1
	}
	return f
}

// A hot GPU holds the frame before its first tile; waiting keeps the
// watchdog fed; the hysteresis band holds the wait while the GPU cools
// through it; below the resume point the frame runs. Only the changes of
// state are logged, not every recheck.
func TestGPUThrottleWaitsFeedsWatchdogAndResumes(t *testing.T) {
	sock, msgs := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	nlog := recordNotify(t, sock, msgs)
	mon := newFakeMonitor(func(r *gpu.Readings) { r.TempC = 90 })
	in := start(t, setup{
		toml:        "[gpu]\npoll = \"100ms\"\n",
		monitor:     mon,
		wrapBackend: func(b *fakeBackend) deblur.Backend { return &fakeGPUBackend{fakeBackend: b} },
	})
	in.waitReady()
	if v := in.metric("hidiffd_gpu_temperature_celsius"); v != "90" {
		t.Errorf("temperature gauge %q", v)
	}
	in.drop("hot.jpg", testJPEG(t, 100, 80))
	in.eventually(5*time.Second, "throttled for temperature", func() bool {
		return in.metric(`hidiffd_gpu_throttled{reason="temperature"}`) == "1"
	})
	throttledAt := time.Now() // the wait began before this
	// `systemctl status` says why nothing comes out.
	nlog.wait(5*time.Second, "STATUS= naming the throttle", func(m []string) bool {
		return slices.ContainsFunc(m, func(s string) bool {
			return strings.HasPrefix(s, "STATUS=") && strings.Contains(s, ", gpu: wait (temperature: GPU at 90.0 C")
		})
	})
	// Throttled waiting is progress: the pings go on well past the 200ms
	// watchdog period (four at 100ms, counted from a marker in the stream).
	from := nlog.mark("throttled")
	nlog.wait(10*time.Second, "four watchdog pings while throttled", func(m []string) bool {
		return countFrom(m, from, "WATCHDOG=1") >= 4
	})
	if len(in.logs.lines("frame loop made no progress; withholding watchdog ping")) > 0 {
		t.Error("watchdog ping withheld while throttled")
	}
	mon.set(func(r *gpu.Readings) { r.TempC = 80 }) // inside the band: still waiting
	// Three more readings (at the 100ms poll) at 80 C: the gate has seen
	// the GPU inside the band and must still hold the frame.
	reads := mon.reads.Load()
	in.eventually(5*time.Second, "three readings at 80 C", func() bool { return mon.reads.Load() >= reads+3 })
	in.backend.mu.Lock()
	calls := in.backend.calls
	in.backend.mu.Unlock()
	if in.has("out", "hot.jpg") || calls != 0 {
		t.Fatal("frame ran while the GPU was hot")
	}
	mon.set(func(r *gpu.Readings) { r.TempC = 70 })
	held := time.Since(throttledAt) // the wait ends after this
	in.eventually(5*time.Second, "hot.jpg processed", func() bool { return in.has("out", "hot.jpg") })
	in.eventually(2*time.Second, "throttle gauge cleared", func() bool {
		return in.metric(`hidiffd_gpu_throttled{reason="temperature"}`) == "0"
	})
	// Counted per recheck: all of the wait but the moments between rechecks.
	if s := metricFloat(t, in, `hidiffd_gpu_throttled_seconds_total{reason="temperature"}`); s < 0.9*held.Seconds() {
		t.Errorf("throttled seconds %v, want at least the %v the test saw the frame held", s, held)
	}
	in.drop("cool.jpg", testJPEG(t, 100, 80))
	in.eventually(5*time.Second, "cool.jpg processed", func() bool { return in.has("out", "cool.jpg") })
	in.stop()
	lines := in.logs.lines("gpu throttle")
	if len(lines) != 2 || lines[0]["action"] != "wait" || lines[0]["reason"] != "temperature" || lines[1]["action"] != "run" {
		t.Errorf("want exactly a wait line and a run line, got %v", lines)
	}
}

// SIGTERM while a frame waits for the GPU releases it to inbox/ at once,
// without waiting for the drain timeout.
func TestGPUThrottleDrainReleasesWaitingFrame(t *testing.T) {
	mon := newFakeMonitor(func(r *gpu.Readings) { r.MemFree = 100 << 20 }) // below min_free_mib
	in := start(t, setup{
		toml:        "[gpu]\npoll = \"100ms\"\n[shutdown]\ndrain_timeout = \"1m\"\n",
		monitor:     mon,
		wrapBackend: func(b *fakeBackend) deblur.Backend { return &fakeGPUBackend{fakeBackend: b} },
	})
	in.waitReady()
	in.drop("wait.jpg", testJPEG(t, 64, 64))
	in.eventually(5*time.Second, "throttled for memory", func() bool {
		return in.metric(`hidiffd_gpu_throttled{reason="memory"}`) == "1"
	})
	t0 := time.Now()
	in.stop()
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("drain took %v", d)
	}
	if !in.has("inbox", "wait.jpg") || in.has("failed", "wait.jpg") {
		t.Errorf("waiting frame should be back in inbox/: inbox=%v failed=%v", in.names("inbox"), in.names("failed"))
	}
	if len(in.logs.lines("returning frame to inbox/")) != 1 {
		t.Error("no release line")
	}
}

// A backend out of GPU memory: the frame runs again with smaller tiles;
// below gpu.min_tile it goes to failed/ with the reason.
func TestGPUOutOfMemoryRetriesThenFails(t *testing.T) {
	var fb *fakeGPUBackend
	in := start(t, setup{
		toml: "[model]\ndir = \"/nonexistent-fake-backend\"\ntile = 256\noverlap = 16\n[gpu]\nmin_tile = 64\n",
		wrapBackend: func(b *fakeBackend) deblur.Backend {
			fb = &fakeGPUBackend{fakeBackend: b}
			fb.oomAbove.Store(100)
			return fb
		},
	})
	in.waitReady()
	in.drop("fits.jpg", testJPEG(t, 200, 200)) // whole frame 200 fails, 96 fits
	in.eventually(5*time.Second, "fits.jpg processed", func() bool { return in.has("out", "fits.jpg") })
	if v := in.metric("hidiffd_gpu_oom_retries_total"); v != "1" {
		t.Errorf("oom retries %q, want 1", v)
	}
	if len(in.logs.lines("gpu out of memory: the frame ran with smaller tiles")) != 1 {
		t.Error("no log line for the retry")
	}

	fb.oomAbove.Store(50) // 200 -> 96 -> 64 (min_tile), all too big
	in.drop("huge.jpg", testJPEG(t, 200, 200))
	in.eventually(5*time.Second, "huge.jpg failed", func() bool { return in.has("failed", "huge.jpg.error.json") })
	data, _ := os.ReadFile(filepath.Join(in.dir("failed"), "huge.jpg.error.json"))
	for _, want := range []string{"out of device memory", "minimum tile 64", `"stage": "pipeline"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("error.json lacks %q: %s", want, data)
		}
	}
	if v := in.metric("hidiffd_gpu_oom_retries_total"); v != "3" {
		t.Errorf("oom retries %q, want 3", v)
	}
	in.stop()
}

// A CPU backend is not held back by a hot GPU, but the readings are still
// exported.
func TestGPUNotGatingCPUBackend(t *testing.T) {
	mon := newFakeMonitor(func(r *gpu.Readings) { r.TempC = 99; r.PowerW = 250.5 })
	in := start(t, setup{monitor: mon})
	in.waitReady()
	in.drop("cpu.jpg", testJPEG(t, 64, 64))
	in.eventually(5*time.Second, "cpu.jpg processed", func() bool { return in.has("out", "cpu.jpg") })
	for sample, want := range map[string]string{
		"hidiffd_gpu_temperature_celsius":                      "99",
		"hidiffd_gpu_power_watts":                              "250.5",
		`hidiffd_gpu_utilization_percent{kind="gpu"}`:          "NaN",
		`hidiffd_gpu_info{device="fake GPU",monitor="fake"}`:   "1",
		`hidiffd_gpu_memory_free_bytes`:                        "1.2884901888e+10",
		`hidiffd_gpu_throttled{reason="temperature"}`:          "0",
		`hidiffd_gpu_clock_event{event="thermal"}`:             "NaN",
		`hidiffd_gpu_throttled_seconds_total{reason="memory"}`: "0",
	} {
		if v := in.metric(sample); v != want {
			t.Errorf("%s = %q, want %q", sample, v, want)
		}
	}
	if l := in.logs.lines("gpu telemetry"); len(l) != 1 || l[0]["throttle"] != false {
		t.Errorf("gpu telemetry line %v", l)
	}
	in.stop()
}

// An explicitly requested monitor that cannot work here stops the start
// with the key; "auto" on the same machine starts without GPU telemetry.
func TestGPUMonitorExplicitUnavailable(t *testing.T) {
	if m, err := gpu.Open(gpu.Options{Kind: gpu.KindNVML}); err == nil {
		m.Close()
		t.Skip("this machine has NVML")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(testConfig("[gpu]\nmonitor = \"nvml\"\n")), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Config: cfg, ConfigPath: path, LogOutput: &syncBuffer{}, Signals: make(chan os.Signal),
		OpenBackend: func(*config.Config) (deblur.Backend, error) { return &fakeBackend{}, nil }})
	if err == nil || !strings.Contains(err.Error(), "gpu.monitor") || !strings.Contains(err.Error(), "libnvidia-ml.so.1") {
		t.Errorf("Run = %v", err)
	}
}
