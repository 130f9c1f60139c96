package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/gpu"
)

// errFakeDeviceLost is what the failing fake GPU returns for every call.
var errFakeDeviceLost = errors.New("fake GPU: CUDA error 700 (an illegal memory access; the device is lost)")

// fakeGPUs opens one fake GPU backend per gpu.device; failing lists the
// devices whose every network call fails. calls counts each device's calls.
type fakeGPUs struct {
	failing map[int]bool
	calls   [4]atomic.Int64
	// hold, if set, runs before every call of a working device (the test
	// makes device 1 wait until device 0 has failed).
	hold func(dev int, ctx context.Context)
}

func (g *fakeGPUs) open(cfg *config.Config) (deblur.Backend, error) {
	dev := cfg.GPU.Device
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		g.calls[dev].Add(1)
		if g.failing[dev] {
			return errFakeDeviceLost
		}
		if g.hold != nil {
			g.hold(dev, ctx)
		}
		return nil
	}}
	return &fakeGPUBackend{fakeBackend: fb}, nil
}

// TestTwoGPUWorkersOneFails: one daemon, backend.devices = "all" on a
// machine of two GPUs (counted by a fake), two fake
// GPU backends; device 0 fails its first frame. That worker stops alone,
// its frame goes back to inbox/, and every frame ends in out/ through the
// other; /readyz stays ready and names the stopped worker; the metrics
// carry worker labels.
func TestTwoGPUWorkersOneFails(t *testing.T) {
	gpus := &fakeGPUs{failing: map[int]bool{0: true}}
	gpu0Failed := make(chan struct{})
	var once atomic.Bool
	gpus.hold = func(dev int, ctx context.Context) {
		// Device 1 holds its first frame until device 0 has failed, so
		// that device 0 surely gets a frame.
		if dev == 1 && once.CompareAndSwap(false, true) {
			select {
			case <-gpu0Failed:
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
		}
	}
	in := start(t, setup{
		toml:      "[backend]\ndevices = \"all\"\n", // testConfig splits tables at "[": no arrays
		openFor:   gpus.open,
		countGPUs: func() (int, error) { return 2, nil },
		monitor:   newFakeMonitor(nil),
	})
	in.waitReady()
	const n = 6
	for i := 0; i < n; i++ {
		in.drop(fmt.Sprintf("f%d.jpg", i), testJPEG(t, 40, 30))
	}
	in.eventually(10*time.Second, "worker gpu0 stopped", func() bool {
		if in.metric(`hidiffd_worker_up{worker="gpu0"}`) == "0" {
			once.Store(true) // whatever device 1 holds may go on
			select {
			case <-gpu0Failed:
			default:
				close(gpu0Failed)
			}
			return true
		}
		return false
	})
	// Processed counts a frame once its original has left work/, just after
	// its output is in out/.
	in.eventually(15*time.Second, "every frame in out/ and processed", func() bool {
		return len(in.names("out")) == n && in.metric("hidiffd_images_processed_total") == fmt.Sprint(n)
	})

	if got := in.names("failed"); len(got) != 0 {
		t.Errorf("failed/ = %v, want empty: a failing GPU is not the frames' fault", got)
	}
	if got := in.names("inbox"); len(got) != 0 {
		t.Errorf("inbox/ = %v", got)
	}
	if c := gpus.calls[0].Load(); c != 1 {
		t.Errorf("gpu0 ran %d network calls; it should have stopped after its first failure", c)
	}
	for sample, want := range map[string]string{
		`hidiffd_worker_up{worker="gpu0"}`:                             "0",
		`hidiffd_worker_up{worker="gpu1"}`:                             "1",
		`hidiffd_worker_frames_total{result="requeued",worker="gpu0"}`: "1",
		`hidiffd_worker_frames_total{result="ok",worker="gpu1"}`:       fmt.Sprint(n),
		`hidiffd_gpu_oom_retries_total{worker="gpu1"}`:                 "0",
	} {
		if got := in.metric(sample); got != want {
			t.Errorf("%s = %q, want %q", sample, got, want)
		}
	}
	code, body := in.get("/readyz")
	if code != 200 || !strings.HasPrefix(body, "ready\n") || !strings.Contains(body, "degraded: worker gpu0 stopped (its backend failed: ") ||
		!strings.Contains(body, errFakeDeviceLost.Error()) {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if l := in.logs.lines("worker stopped: its backend failed; the frame goes back to inbox/ for the other workers"); len(l) != 1 || l[0]["worker"] != "gpu0" {
		t.Errorf("stop lines = %v", l)
	}
	in.stop()
}

// TestLastWorkerFailsFramesAsOneWorker: when every GPU fails, the first
// worker to fail stops and hands its frame back; the last one running
// stays and fails the frame into failed/ with its record, as a daemon of
// one worker does: the frame is never lost, and the daemon keeps a worker.
func TestLastWorkerFailsFramesAsOneWorker(t *testing.T) {
	gpus := &fakeGPUs{failing: map[int]bool{0: true, 1: true}}
	in := start(t, setup{
		toml:      "[backend]\ndevices = \"all\"\n", // testConfig splits tables at "[": no arrays
		openFor:   gpus.open,
		countGPUs: func() (int, error) { return 2, nil },
	})
	in.waitReady()
	in.drop("bad.jpg", testJPEG(t, 40, 30))
	in.eventually(10*time.Second, "the frame in failed/", func() bool { return in.has("failed", "bad.jpg.error.json") })
	up0, up1 := in.metric(`hidiffd_worker_up{worker="gpu0"}`), in.metric(`hidiffd_worker_up{worker="gpu1"}`)
	if up0+up1 != "01" && up0+up1 != "10" {
		t.Errorf("worker_up gpu0 %s gpu1 %s: want exactly one stopped", up0, up1)
	}
	if c := gpus.calls[0].Load() + gpus.calls[1].Load(); c != 2 {
		t.Errorf("%d network calls, want 2 (one per worker)", c)
	}
	if code, _ := in.get("/readyz"); code != 200 {
		t.Errorf("/readyz %d with one worker running", code)
	}
	in.stop()
}

// TestPlanWorkers: how backend.devices and backend.workers become workers;
// a device the machine does not have is refused naming the key.
func TestPlanWorkers(t *testing.T) {
	type plan struct {
		names    []string
		devices  []int
		threads  []int
		labelled bool
	}
	cases := []struct {
		name    string
		toml    string
		gpus    int
		gpuErr  error
		want    plan
		wantErr string
	}{
		{"default: one worker", "", 0, nil, plan{[]string{"cpu0"}, []int{0}, []int{0}, false}, ""},
		{"listed GPUs", "[backend]\ndevices = [1, 0]\n", 2, nil, plan{[]string{"gpu1", "gpu0"}, []int{1, 0}, []int{0, 0}, true}, ""},
		{"all GPUs", "[backend]\ndevices = \"all\"\n", 3, nil, plan{[]string{"gpu0", "gpu1", "gpu2"}, []int{0, 1, 2}, []int{0, 0, 0}, true}, ""},
		{"one GPU of all", "[backend]\ndevices = \"all\"\n", 1, nil, plan{[]string{"gpu0"}, []int{0}, []int{0}, false}, ""},
		{"GPUs not countable: the list is taken", "[backend]\ndevices = [3]\n", 0, errors.New("fake: no NVML"),
			plan{[]string{"gpu3"}, []int{3}, []int{0}, false}, ""},
		{"CPU workers share the threads", "[backend]\nkind = \"onnxruntime\"\nthreads = 8\nworkers = 3\n", 0, nil,
			plan{[]string{"cpu0", "cpu1", "cpu2"}, []int{0, 0, 0}, []int{3, 3, 2}, true}, ""},
		{"more workers than threads", "[backend]\nkind = \"onnxruntime\"\nthreads = 1\nworkers = 2\n", 0, nil,
			plan{[]string{"cpu0", "cpu1"}, []int{0, 0}, []int{1, 1}, true}, ""},
		{"device out of range", "[backend]\ndevices = [0, 5]\n", 2, nil, plan{}, "backend.devices = [0, 5]: GPU 5 is out of range: this machine has 2 GPU(s), 0..1"},
		{"all without a GPU count", "[backend]\ndevices = \"all\"\n", 0, errors.New("fake: no NVML"), plan{}, `backend.devices = "all": cannot count the GPUs: fake: no NVML`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.toml), "/etc/hidiffd/c.toml")
			if err != nil {
				t.Fatal(err)
			}
			d := &Daemon{opts: Options{CountGPUs: func() (int, error) { return c.gpus, c.gpuErr }}}
			ws, err := d.planWorkers(cfg)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got plan
			for _, w := range ws {
				got.names = append(got.names, w.name)
				got.devices = append(got.devices, w.cfg.GPU.Device)
				got.threads = append(got.threads, w.cfg.Backend.Threads)
				got.labelled = w.labelled
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("plan %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestCPUWorkersShareTheQueue: backend.workers = 2 on the CPU: two
// backends, each with half of backend.threads, both taking frames from the
// one queue; a single-worker daemon's metrics keep their old names and
// gain only the worker series.
func TestCPUWorkersShareTheQueue(t *testing.T) {
	var mu sync.Mutex
	var threads []int
	in := start(t, setup{
		toml: "[backend]\nkind = \"onnxruntime\"\nthreads = 4\nworkers = 2\n",
		openFor: func(cfg *config.Config) (deblur.Backend, error) {
			mu.Lock()
			defer mu.Unlock()
			threads = append(threads, cfg.Backend.Threads)
			return &fakeBackend{}, nil
		},
	})
	in.waitReady()
	const n = 4
	for i := 0; i < n; i++ {
		in.drop(fmt.Sprintf("c%d.png", i), testPNG(t, 24, 16))
	}
	in.eventually(10*time.Second, "every frame in out/ and processed", func() bool {
		return len(in.names("out")) == n && in.metric("hidiffd_images_processed_total") == fmt.Sprint(n)
	})
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(threads, []int{2, 2}) {
		t.Errorf("threads per worker %v, want [2 2]", threads)
	}
	for _, sample := range []string{`hidiffd_worker_up{worker="cpu0"}`, `hidiffd_worker_up{worker="cpu1"}`} {
		if got := in.metric(sample); got != "1" {
			t.Errorf("%s = %q", sample, got)
		}
	}
	ok0 := metricFloat(t, in, `hidiffd_worker_frames_total{result="ok",worker="cpu0"}`)
	ok1 := metricFloat(t, in, `hidiffd_worker_frames_total{result="ok",worker="cpu1"}`)
	if ok0+ok1 != n {
		t.Errorf("frames ok cpu0 %v + cpu1 %v, want %d", ok0, ok1, n)
	}
	in.stop()

	one := start(t, setup{})
	one.waitReady()
	if got := one.metric(`hidiffd_worker_up{worker="cpu0"}`); got != "1" {
		t.Errorf("one worker: hidiffd_worker_up = %q", got)
	}
	if got := one.metric(`hidiffd_gpu_oom_retries_total`); got != "0" {
		t.Errorf("one worker: GPU metrics without a worker label, as before: hidiffd_gpu_oom_retries_total = %q", got)
	}
	one.stop()
}

// TestWorkerThatDoesNotOpen: with several workers, one whose backend does
// not open is left out and the others start (/readyz ready, naming it);
// none opening is a failed start, in phase "backend", naming them all.
func TestWorkerThatDoesNotOpen(t *testing.T) {
	errNoDevice := errors.New("fake: cudaSetDevice: no CUDA-capable device")
	openFailing := func(failing map[int]bool) func(*config.Config) (deblur.Backend, error) {
		return func(cfg *config.Config) (deblur.Backend, error) {
			if failing[cfg.GPU.Device] {
				return nil, errNoDevice
			}
			return &fakeGPUBackend{fakeBackend: &fakeBackend{}}, nil
		}
	}
	t.Run("one of two", func(t *testing.T) {
		in := start(t, setup{
			toml:      "[backend]\ndevices = \"all\"\n",
			openFor:   openFailing(map[int]bool{0: true}),
			countGPUs: func() (int, error) { return 2, nil },
		})
		in.waitReady()
		code, body := in.get("/readyz")
		if code != 200 || !strings.Contains(body, "degraded: worker gpu0 stopped (its backend did not open: "+errNoDevice.Error()) {
			t.Errorf("/readyz = %d %q", code, body)
		}
		in.drop("a.jpg", testJPEG(t, 40, 30))
		in.eventually(10*time.Second, "a.jpg in out/", func() bool { return in.has("out", "a.jpg") })
		if got := in.metric(`hidiffd_worker_up{worker="gpu0"}`); got != "0" {
			t.Errorf("hidiffd_worker_up gpu0 = %q", got)
		}
		in.stop()
	})
	t.Run("one of two on the CPU", func(t *testing.T) {
		// backend.kind = "auto" without TensorRT comes up on the CPU: a
		// worker of backend.devices refuses that (and closes it).
		var cpuFake *fakeBackend
		in := start(t, setup{
			toml: "[backend]\ndevices = \"all\"\n",
			openFor: func(cfg *config.Config) (deblur.Backend, error) {
				if cfg.GPU.Device == 0 {
					cpuFake = &fakeBackend{}
					return cpuFake, nil
				}
				return &fakeGPUBackend{fakeBackend: &fakeBackend{}}, nil
			},
			countGPUs: func() (int, error) { return 2, nil },
		})
		in.waitReady()
		code, body := in.get("/readyz")
		if code != 200 || !strings.Contains(body, "degraded: worker gpu0 stopped (its backend did not open: ") ||
			!strings.Contains(body, "backend.devices") || !strings.Contains(body, "does not run on the GPU") {
			t.Errorf("/readyz = %d %q", code, body)
		}
		if cpuFake == nil || !cpuFake.isClosed() {
			t.Error("the refused CPU backend was not closed")
		}
		in.stop()
	})
	t.Run("monitor of one of two", func(t *testing.T) {
		in := start(t, setup{
			toml:      "[backend]\ndevices = \"all\"\n",
			openFor:   openFailing(nil),
			countGPUs: func() (int, error) { return 2, nil },
			openMonitor: func(cfg *config.Config) (gpu.Monitor, error) {
				if cfg.GPU.Device == 1 {
					return nil, errors.New("fake: nvmlDeviceGetHandleByIndex: GPU is lost")
				}
				return newFakeMonitor(nil), nil
			},
		})
		in.waitReady()
		code, body := in.get("/readyz")
		if code != 200 || !strings.Contains(body, "degraded: worker gpu1 stopped (its GPU monitor did not open: worker gpu1: ") ||
			!strings.Contains(body, "gpu.monitor") {
			t.Errorf("/readyz = %d %q", code, body)
		}
		in.drop("a.jpg", testJPEG(t, 40, 30))
		in.eventually(10*time.Second, "a.jpg in out/", func() bool { return in.has("out", "a.jpg") })
		in.stop()
	})
	t.Run("none", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(path, []byte(testConfig("[backend]\ndevices = \"all\"\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		err = Run(context.Background(), Options{Config: cfg, ConfigPath: path, LogOutput: &syncBuffer{}, Signals: make(chan os.Signal),
			OpenBackend: openFailing(map[int]bool{0: true, 1: true}), CountGPUs: func() (int, error) { return 2, nil }})
		if err == nil || !strings.HasPrefix(err.Error(), "start-up phase backend: no worker could open its backend (gpu0, gpu1)") ||
			!errors.Is(err, errNoDevice) {
			t.Errorf("Run = %v", err)
		}
	})
}

// fakePoisonGPU is a working fake GPU that fails every call on an image
// poisonW pixels wide (after padding): a frame no backend can run.
type fakePoisonGPU struct {
	*fakeGPUBackend
	poisonW int64
}

func (f *fakePoisonGPU) Transform(ctx context.Context, blur, prior deblur.Tensor) (deblur.Tensor, error) {
	if blur.Shape[3] == f.poisonW {
		return deblur.Tensor{}, errors.New("fake: this frame breaks every backend")
	}
	return f.fakeGPUBackend.Transform(ctx, blur, prior)
}

// TestBadFrameStopsAtMostOneWorker: three fake GPUs, one frame that fails
// on any backend. The first worker it fails on stops and hands it back;
// the second, seeing a frame that stopped a worker already, fails it into
// failed/ and goes on; the good frames end in out/.
func TestBadFrameStopsAtMostOneWorker(t *testing.T) {
	in := start(t, setup{
		toml: "[backend]\ndevices = \"all\"\n",
		openFor: func(*config.Config) (deblur.Backend, error) {
			return &fakePoisonGPU{fakeGPUBackend: &fakeGPUBackend{fakeBackend: &fakeBackend{}}, poisonW: 56}, nil
		},
		countGPUs: func() (int, error) { return 3, nil },
	})
	in.waitReady()
	in.drop("poison.jpg", testJPEG(t, 56, 30))
	const good = 4
	for i := 0; i < good; i++ {
		in.drop(fmt.Sprintf("g%d.jpg", i), testJPEG(t, 40, 30))
	}
	in.eventually(15*time.Second, "poison in failed/, the rest processed", func() bool {
		return in.has("failed", "poison.jpg") && in.metric("hidiffd_images_processed_total") == fmt.Sprint(good)
	})
	stopped := 0
	for _, w := range []string{"gpu0", "gpu1", "gpu2"} {
		if in.metric(`hidiffd_worker_up{worker="`+w+`"}`) == "0" {
			stopped++
		}
	}
	if stopped != 1 {
		t.Errorf("%d workers stopped, want 1", stopped)
	}
	if got := len(in.names("out")); got != good {
		t.Errorf("out/ holds %d files, want %d", got, good)
	}
	if l := in.logs.lines("the frame failed on a second backend after stopping a worker: it is the frame's fault, not this worker's"); len(l) != 1 {
		t.Errorf("%d second-failure lines, want 1", len(l))
	}
	in.stop()
}
