package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/gpu"
	"hidiffd/internal/clock"
	"hidiffd/spool"
)

// fakeBackend is a network that returns its input: the daemon's wiring is
// under test, not the model. Hooks let a test hold a call (drain tests) or
// fail it.
type fakeBackend struct {
	mu          sync.Mutex
	onTransform func(ctx context.Context) error // nil: return at once
	calls       int
	closed      bool
}

func (f *fakeBackend) Name() string { return "fake" }
func (f *fakeBackend) Info() deblur.ModelInfo {
	return deblur.ModelInfo{Model: "fake", Version: "0", Preset: "test", Timesteps: 1,
		PadMultiple: 8, PriorTokens: 16, PriorChannels: 256}
}
func (f *fakeBackend) Prior(ctx context.Context, blur, noise deblur.Tensor) (deblur.Tensor, error) {
	return deblur.Tensor{Shape: append([]int64(nil), noise.Shape...), Data: append([]float32(nil), noise.Data...)}, nil
}
func (f *fakeBackend) Transform(ctx context.Context, blur, prior deblur.Tensor) (deblur.Tensor, error) {
	f.mu.Lock()
	f.calls++
	hook := f.onTransform
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			return deblur.Tensor{}, err
		}
	}
	return deblur.Tensor{Shape: append([]int64(nil), blur.Shape...), Data: append([]float32(nil), blur.Data...)}, nil
}
func (f *fakeBackend) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func (f *fakeBackend) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log lines whose message is msg.
func (b *syncBuffer) lines(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// instance is one in-process daemon under test.
type instance struct {
	t       *testing.T
	root    string // spool root
	cfgPath string
	backend *fakeBackend
	logs    *syncBuffer
	sigs    chan os.Signal
	done    chan error
	addr    chan net.Addr
	httpURL string
	stopped bool // Run has returned and its result was consumed
}

type setup struct {
	toml string // extra TOML appended to the test defaults (tables may repeat keys' tables: give whole tables)
	// openBackend runs before the fake backend is returned (e.g. block to
	// observe /readyz before the model is loaded).
	openBackend func() error
	backend     *fakeBackend
	// wrapBackend, if set, is what the daemon gets instead of backend
	// (e.g. a fake that runs "on the GPU"); monitor replaces the GPU
	// monitor.
	wrapBackend func(*fakeBackend) deblur.Backend
	monitor     gpu.Monitor
	// openMonitor, if set, opens each worker's monitor from its
	// configuration (gpu.device); it wins over monitor.
	openMonitor func(*config.Config) (gpu.Monitor, error)
	// dir, if set, is the folder holding the spool and the configuration
	// (a restart on the spool of an earlier instance); default a new one.
	dir string
	// clock, if set, drives the retry backoff.
	clock clock.Clock
	// openFor, if set, opens each worker's backend from its configuration
	// (gpu.device): several fake GPUs. countGPUs is the machine's GPUs.
	openFor   func(*config.Config) (deblur.Backend, error)
	countGPUs func() (int, error)
	// amend is Options.Amend (the command line's overrides); start applies
	// it to the first configuration as cmd/hidiffd does.
	amend func(*config.Config) error
}

// start runs a daemon with a fresh spool, fast settle/rescan and HTTP on a
// free port, and waits until it is ready (unless the backend open blocks).
func start(t *testing.T, s setup) *instance {
	t.Helper()
	dir := s.dir
	if dir == "" {
		dir = t.TempDir()
	}
	in := &instance{
		t: t, root: filepath.Join(dir, "spool"), cfgPath: filepath.Join(dir, "hidiffd.toml"),
		backend: s.backend, logs: &syncBuffer{}, sigs: make(chan os.Signal, 4),
		done: make(chan error, 1), addr: make(chan net.Addr, 1),
	}
	if in.backend == nil {
		in.backend = &fakeBackend{}
	}
	doc := testConfig(s.toml)
	if err := os.WriteFile(in.cfgPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(in.cfgPath)
	if err == nil && s.amend != nil {
		err = s.amend(cfg)
	}
	if err != nil {
		t.Fatalf("test config: %v\n%s", err, doc)
	}
	opts := Options{
		ConfigPath: in.cfgPath, Config: cfg, Version: "test", LogOutput: in.logs, Signals: in.sigs,
		OpenBackend: func(*config.Config) (deblur.Backend, error) {
			if s.openBackend != nil {
				if err := s.openBackend(); err != nil {
					return nil, err
				}
			}
			if s.wrapBackend != nil {
				return s.wrapBackend(in.backend), nil
			}
			return in.backend, nil
		},
		OnListen: func(a net.Addr) { in.addr <- a },
		Clock:    s.clock,
		// The fake network counts and holds calls; a warm-up call would
		// shift every test's count.
		SkipWarmup: true,
	}
	if s.monitor != nil {
		opts.OpenMonitor = func(*config.Config) (gpu.Monitor, error) { return s.monitor, nil }
	}
	if s.openMonitor != nil {
		opts.OpenMonitor = s.openMonitor
	}
	if s.openFor != nil {
		opts.OpenBackend = s.openFor
	}
	opts.CountGPUs = s.countGPUs
	opts.Amend = s.amend
	go func() { in.done <- Run(context.Background(), opts) }()
	select {
	case a := <-in.addr:
		in.httpURL = "http://" + a.String()
	case err := <-in.done:
		t.Fatalf("daemon exited during start: %v\nlogs:\n%s", err, in.logs)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not start listening")
	}
	t.Cleanup(func() {
		select {
		case <-in.done:
		default:
			if in.stopped {
				break
			}
			in.sigs <- syscall.SIGTERM
			in.sigs <- syscall.SIGTERM // second: do not wait for a held frame
			select {
			case <-in.done:
			case <-time.After(10 * time.Second):
				t.Errorf("daemon did not stop\nlogs:\n%s", in.logs)
			}
		}
		if t.Failed() {
			t.Logf("daemon logs:\n%s", in.logs)
		}
	})
	return in
}

// testConfig is a configuration for tests; extra whole tables replace the
// defaults' tables of the same name.
func testConfig(extra string) string {
	tables := map[string]string{
		"spool":    "root = \"spool\"\nsettle = \"50ms\"\nrescan = \"200ms\"\nqueue_size = 4\n",
		"model":    "dir = \"/nonexistent-fake-backend\"\ntile = 64\noverlap = 8\n",
		"log":      "level = \"debug\"\nformat = \"json\"\n",
		"http":     "listen = \"127.0.0.1:0\"\n",
		"retry":    "initial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\n",
		"shutdown": "drain_timeout = \"5s\"\n",
	}
	order := []string{"spool", "model", "log", "http", "retry", "shutdown"}
	for _, block := range strings.Split(extra, "[")[1:] {
		name, body, _ := strings.Cut(block, "]")
		if _, ok := tables[name]; !ok {
			order = append(order, name)
		}
		tables[name] = strings.TrimLeft(body, "\n")
	}
	var b strings.Builder
	for _, n := range order {
		fmt.Fprintf(&b, "[%s]\n%s\n", n, tables[n])
	}
	return b.String()
}

func (in *instance) waitReady() {
	in.t.Helper()
	in.eventually(10*time.Second, "readyz 200", func() bool { code, _ := in.get("/readyz"); return code == 200 })
}

func (in *instance) get(path string) (int, string) {
	resp, err := http.Get(in.httpURL + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// eventually polls cond until it holds, failing the test after within. It
// is for what only shows in the spool's folders, the log or /metrics (a
// real daemon with real files and real inotify events, no event to wait
// on); the deadline only bounds a test that would otherwise hang.
func (in *instance) eventually(within time.Duration, what string, cond func() bool) {
	in.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			in.t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for Run to return; it must return nil.
func (in *instance) stop() {
	in.t.Helper()
	in.sigs <- syscall.SIGTERM
	select {
	case err := <-in.done:
		in.stopped = true
		if err != nil {
			in.t.Fatalf("Run returned %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		in.t.Fatal("daemon did not stop within 15s of SIGTERM")
	}
}

// dir is a state folder; "work" is this daemon's own work/<id>/ (the
// default id, the host's short name).
func (in *instance) dir(state string) string {
	if state == spool.Work {
		return filepath.Join(in.root, state, spool.ExpandInstance("%h"))
	}
	return filepath.Join(in.root, state)
}

// drop puts a file into inbox/ the way a well-behaved camera does: written
// under a dotfile name, then renamed in.
func (in *instance) drop(name string, data []byte) {
	in.t.Helper()
	tmp := filepath.Join(in.dir("inbox"), "."+name+".incoming")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		in.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(in.dir("inbox"), name)); err != nil {
		in.t.Fatal(err)
	}
}

// names lists a state folder.
func (in *instance) names(state string) []string {
	ents, _ := os.ReadDir(in.dir(state))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func (in *instance) has(state, name string) bool {
	_, err := os.Lstat(filepath.Join(in.dir(state), name))
	return err == nil
}

// metric returns the value of one sample line of /metrics ("" if absent).
func (in *instance) metric(sample string) string {
	_, body := in.get("/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			return v
		}
	}
	return ""
}

// testJPEG and testPNG make small gradient images.
func testImage(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 3), uint8(y * 5), uint8(x + y), 255})
		}
	}
	return img
}

func testJPEG(t *testing.T, w, h int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, testImage(w, h), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testPNG(t *testing.T, w, h int) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, testImage(w, h)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// holdFirst is a fake backend that stops in its first frame's network call
// until proceed is closed, after telling entered; later frames pass.
func holdFirst() (fb *fakeBackend, entered chan struct{}, proceed chan struct{}) {
	entered = make(chan struct{}, 8)
	proceed = make(chan struct{})
	first := true
	fb = &fakeBackend{onTransform: func(ctx context.Context) error {
		if first {
			first = false
			entered <- struct{}{}
			<-proceed
		}
		return nil
	}}
	return fb, entered, proceed
}
