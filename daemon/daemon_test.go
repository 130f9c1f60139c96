package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/watch"
)

// TestSdNotifySequence plays systemd: a notify socket, a watchdog, and the
// order of what the daemon says over a start, some work and a stop.
func TestSdNotifySequence(t *testing.T) {
	sock, msgs := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000") // 200ms: pings every 100ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	nlog := recordNotify(t, sock, msgs)
	in := start(t, setup{openBackend: func() error {
		// The model loads until the daemon has extended the start-up
		// timeout: it must say so while loading, not after.
		if !nlog.until(10*time.Second, func(m []string) bool { return countFrom(m, 0, "EXTEND_TIMEOUT_USEC=") > 0 }) {
			return errors.New("no EXTEND_TIMEOUT_USEC while the model loaded")
		}
		return nil
	}})
	in.waitReady()
	in.drop("a.jpg", testJPEG(t, 64, 48))
	in.eventually(10*time.Second, "a.jpg processed", func() bool { return in.has("out", "a.jpg") })
	nlog.wait(10*time.Second, "a few watchdog periods: three pings after READY=1", func(m []string) bool {
		r := slices.IndexFunc(m, func(s string) bool { return strings.HasPrefix(s, "READY=1") })
		return r >= 0 && countFrom(m, r, "WATCHDOG=1") >= 3
	})
	in.stop()

	// Everything the daemon sent, in order: it returned before the marker
	// was sent, so all of it is before the marker.
	end := nlog.mark("end")
	all := nlog.all()[:end]
	first := func(prefix string) int {
		for i, m := range all {
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, prefix) {
					return i
				}
			}
		}
		return -1
	}
	count := func(prefix string) (n int) {
		for _, m := range all {
			if strings.HasPrefix(m, prefix) {
				n++
			}
		}
		return n
	}
	extend, ready, wd, stopping, status := first("EXTEND_TIMEOUT_USEC="), first("READY=1"), first("WATCHDOG=1"), first("STOPPING=1"), first("STATUS=")
	t.Logf("messages: %q", all)
	switch {
	case status < 0 || status > ready:
		t.Errorf("want STATUS= before READY=1 (start-up progress)")
	case extend < 0 || extend > ready:
		t.Errorf("want EXTEND_TIMEOUT_USEC while loading, before READY=1")
	case ready < 0:
		t.Errorf("no READY=1")
	case wd < ready:
		t.Errorf("want WATCHDOG=1 after READY=1 (at %d, READY at %d)", wd, ready)
	case stopping < wd:
		t.Errorf("want STOPPING=1 after the watchdog pings (at %d)", stopping)
	}
	if n := count("WATCHDOG=1"); n < 3 {
		t.Errorf("want WATCHDOG=1 at half the 200ms period over ~0.5s of running, got %d", n)
	}
	if !strings.Contains(all[ready], "STATUS=idle; 0 processed") {
		t.Errorf("READY=1 should carry the counts: %q", all[ready])
	}
	if !strings.Contains(all[stopping], "STATUS=draining; 1 processed, 0 failed") {
		t.Errorf("STOPPING=1 should carry the counts: %q", all[stopping])
	}
	// Pings may go on while the drain runs (a stop not initiated by systemd
	// leaves its watchdog armed), but the daemon never claims readiness.
	for _, m := range all[stopping+1:] {
		if strings.HasPrefix(m, "READY=1") {
			t.Errorf("after STOPPING=1: %q", m)
		}
	}
	if last := all[len(all)-1]; !strings.HasPrefix(last, "STATUS=stopped; 1 processed") {
		t.Errorf("last message %q, want the final STATUS", last)
	}
}

// TestWatchdogWithheldWhileStuck: a backend call that makes no progress for
// longer than WATCHDOG_USEC stops the pings, so systemd restarts us.
func TestWatchdogWithheldWhileStuck(t *testing.T) {
	sock, msgs := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	entered := make(chan struct{}, 1)
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		entered <- struct{}{}
		<-ctx.Done() // wedged until the drain timeout cancels it
		return ctx.Err()
	}}
	nlog := recordNotify(t, sock, msgs)
	in := start(t, setup{backend: fb, toml: "[shutdown]\ndrain_timeout = \"100ms\"\n"})
	in.waitReady()
	in.drop("stuck.jpg", testJPEG(t, 32, 32))
	<-entered
	// The stall shows in the log once the 200ms watchdog period has passed
	// (the stage clocks run on real time, so this is polled); from then on,
	// over the next housekeeping rounds, no ping may be sent. The markers
	// cut the socket's stream exactly at those two moments.
	withheld := func(n int) func() bool {
		return func() bool { return len(in.logs.lines("frame loop made no progress; withholding watchdog ping")) >= n }
	}
	in.eventually(10*time.Second, "the ping to be withheld", withheld(1))
	from := nlog.mark("stalled")
	in.eventually(10*time.Second, "two more rounds withholding the ping", withheld(3))
	to := nlog.mark("still stalled")
	if n := countFrom(nlog.all()[:to], from, "WATCHDOG=1"); n > 0 {
		t.Fatalf("%d WATCHDOG=1 sent while the network call was stuck", n)
	}
	in.stop()
	if !in.has("inbox", "stuck.jpg") {
		t.Errorf("stuck frame should be back in inbox/: inbox=%v work=%v", in.names("inbox"), in.names("work"))
	}
}

func TestReadyzBeforeAndAfterModelLoad(t *testing.T) {
	release := make(chan struct{})
	in := start(t, setup{openBackend: func() error { <-release; return nil }})
	in.eventually(5*time.Second, "/readyz 503 loading model", func() bool {
		code, body := in.get("/readyz")
		return code == 503 && strings.Contains(body, "loading model")
	})
	if code, _ := in.get("/healthz"); code != 200 {
		t.Errorf("/healthz while loading: %d", code)
	}
	if v := in.metric("hidiffd_ready"); v != "0" {
		t.Errorf("hidiffd_ready while loading = %q", v)
	}
	close(release)
	in.waitReady()
	if v := in.metric("hidiffd_ready"); v != "1" {
		t.Errorf("hidiffd_ready after load = %q", v)
	}
	if v := in.metric(`hidiffd_backend_info{backend="fake",model="fake",preset="test",version="0"}`); v != "1" {
		t.Errorf("backend info gauge = %q", v)
	}
	in.stop()
}

// TestBadImagesFailAndDaemonGoesOn drops every kind of bad input between good
// ones: each bad one lands in failed/ with NAME.error.json naming the stage,
// each good one in out/ and done/, and the daemon keeps running.
func TestBadImagesFailAndDaemonGoesOn(t *testing.T) {
	in := start(t, setup{toml: "[spool]\nroot = \"spool\"\nsettle = \"50ms\"\nrescan = \"200ms\"\nmax_pixels = 10000\n"})
	in.waitReady()
	good := testJPEG(t, 90, 60)
	in.drop("good1.jpg", good)
	in.drop("good2.png", testPNG(t, 50, 40))
	in.drop("empty.jpg", nil)
	in.drop("junk.png", []byte("this is not an image at all"))
	in.drop("truncated.jpg", good[:len(good)/2])
	in.drop("huge.png", testPNG(t, 200, 100)) // 20000 px > max_pixels 10000
	if err := os.Symlink("/etc/passwd", filepath.Join(in.dir("inbox"), "link.jpg")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(in.dir("inbox"), "folder.jpg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(in.dir("inbox"), "fifo.jpg"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []string{"empty.jpg", "junk.png", "truncated.jpg", "huge.png", "link.jpg", "folder.jpg", "fifo.jpg"}
	in.eventually(15*time.Second, "all frames handled", func() bool {
		n := 0
		for _, b := range bad {
			if in.has("failed", b+".error.json") {
				n++
			}
		}
		return n == len(bad) && in.has("out", "good1.jpg") && in.has("out", "good2.png")
	})
	// The daemon goes on: a good frame after the bad ones is processed.
	in.drop("good3.jpg", good)
	in.eventually(10*time.Second, "good3 processed", func() bool {
		return in.has("done", "good3.jpg") && in.metric("hidiffd_images_processed_total") == "3"
	})

	for _, b := range bad {
		data, err := os.ReadFile(filepath.Join(in.dir("failed"), b+".error.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rec struct{ Name, Stage, Reason string }
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatalf("%s.error.json: %v", b, err)
		}
		if rec.Name != b || rec.Stage == "" || rec.Reason == "" {
			t.Errorf("%s.error.json = %s", b, data)
		}
		if !in.has("failed", b) {
			t.Errorf("%s not in failed/", b)
		}
		t.Logf("%s: %s: %s", b, rec.Stage, rec.Reason)
	}
	for _, g := range []string{"good1.jpg", "good2.png", "good3.jpg"} {
		if !in.has("done", g) {
			t.Errorf("original %s not in done/", g)
		}
	}
	if w := in.names("work"); len(w) != 0 {
		t.Errorf("work/ not empty: %v", w)
	}
	if v := in.metric("hidiffd_images_processed_total"); v != "3" {
		t.Errorf("processed_total = %q", v)
	}
	total := 0
	for _, st := range []string{"probe", "decode"} {
		n, _ := strconv.Atoi(in.metric(`hidiffd_images_failed_total{stage="` + st + `"}`))
		total += n
	}
	if total != len(bad) {
		t.Errorf("failed_total over probe+decode = %d, want %d", total, len(bad))
	}
	if v := in.metric(`hidiffd_stage_duration_seconds_count{stage="transformer"}`); v != "3" {
		t.Errorf("transformer histogram count = %q", v)
	}
	// One log line per image with the fields operators graph.
	lines := in.logs.lines("deblurred")
	if len(lines) != 3 {
		t.Fatalf("want 3 per-image lines, got %d", len(lines))
	}
	for _, k := range []string{"name", "width", "height", "backend", "tiles", "decode_ms", "prior_ms", "transformer_ms", "encode_ms", "total_ms"} {
		if _, ok := lines[0][k]; !ok {
			t.Errorf("per-image line lacks %q: %v", k, lines[0])
		}
	}
	in.stop()
}

// TestPanicInNetworkFailsOnlyThatFrame: a bug that panics on one frame's data
// must not take the daemon down.
func TestPanicInNetworkFailsOnlyThatFrame(t *testing.T) {
	var n atomic.Int32
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		if n.Add(1) == 1 {
			panic("index out of range (simulated)")
		}
		return nil
	}}
	in := start(t, setup{backend: fb})
	in.waitReady()
	in.drop("boom.jpg", testJPEG(t, 40, 40))
	in.eventually(10*time.Second, "boom failed", func() bool { return in.has("failed", "boom.jpg.error.json") })
	in.drop("fine.jpg", testJPEG(t, 40, 40))
	in.eventually(10*time.Second, "fine processed", func() bool { return in.has("out", "fine.jpg") })
	data, _ := os.ReadFile(filepath.Join(in.dir("failed"), "boom.jpg.error.json"))
	if !bytes.Contains(data, []byte("panicked")) || !bytes.Contains(data, []byte(`"stage": "pipeline"`)) {
		t.Errorf("error.json: %s", data)
	}
	in.stop()
}

// TestTransientOutputErrorKeepsOriginal makes out/ unwritable in a way that
// stops root too (tests run as root, so chmod would not): out/ is replaced by
// a regular file while the frame is in the network, so creating the
// temporary output fails with ENOTDIR, which the spool classes as
// transient. The original must go back to inbox/ untouched (not failed/,
// not done/), stay there while out/ is broken (the claim sees it too), and
// be processed once out/ is back.
func TestTransientOutputErrorKeepsOriginal(t *testing.T) {
	entered := make(chan struct{})
	var once atomic.Bool
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		if once.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-entered
		}
		return nil
	}}
	in := start(t, setup{backend: fb})
	in.waitReady()
	out := in.dir("out")
	breakOut := func() {
		if err := os.Remove(out); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, []byte("not a folder"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	orig := testJPEG(t, 64, 64)
	in.drop("keep.jpg", orig)
	<-entered
	breakOut()
	entered <- struct{}{}
	in.eventually(10*time.Second, "a retry, then a paused claim", func() bool {
		n, _ := strconv.Atoi(in.metric("hidiffd_images_retried_total"))
		return n >= 1 && len(in.logs.lines("claim failed; pausing intake")) >= 1
	})
	if in.has("failed", "keep.jpg") || in.has("done", "keep.jpg") {
		t.Fatalf("frame left the retry loop: failed=%v done=%v", in.names("failed"), in.names("done"))
	}
	// Between attempts it is in inbox/ or work/, never lost.
	if !in.has("inbox", "keep.jpg") && !in.has("work", "keep.jpg") {
		t.Fatalf("original missing: inbox=%v work=%v", in.names("inbox"), in.names("work"))
	}
	lines := in.logs.lines("transient error; original returned to inbox/ for a retry")
	if len(lines) == 0 || lines[0]["backoff"] == nil {
		t.Errorf("want a transient-error line with the backoff, got %v", lines)
	}

	// The disk "recovers": the frame goes through.
	if err := os.Remove(out); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(out, 0o750); err != nil {
		t.Fatal(err)
	}
	in.eventually(10*time.Second, "processed after recovery", func() bool { return in.has("out", "keep.jpg") && in.has("done", "keep.jpg") })
	got, _ := os.ReadFile(filepath.Join(in.dir("done"), "keep.jpg"))
	if !bytes.Equal(got, orig) {
		t.Error("original changed on its way through the retries")
	}
	if f := in.names("failed"); len(f) != 0 {
		t.Errorf("failed/ = %v", f)
	}
	in.stop()
}

// TestDrainCompletesFrameInFlight: SIGTERM while the network works on a
// frame lets it finish and publish; nothing stays in work/, no temporary
// file in out/, Run returns nil.
func TestDrainCompletesFrameInFlight(t *testing.T) {
	entered := make(chan struct{}, 8)
	proceed := make(chan struct{})
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		entered <- struct{}{}
		<-proceed
		return nil
	}}
	in := start(t, setup{backend: fb})
	in.waitReady()
	in.drop("inflight.jpg", testJPEG(t, 48, 48))
	<-entered
	// The decode loop runs one frame ahead of the network: later.jpg is
	// claimed and decoded while inflight.jpg is in the network, and must go
	// back to inbox/ when the drain starts.
	in.drop("later.jpg", testJPEG(t, 48, 48))
	in.eventually(10*time.Second, "later.jpg claimed", func() bool { return in.has("work", "later.jpg") })
	in.sigs <- syscall.SIGTERM
	in.eventually(5*time.Second, "readyz 503 while draining", func() bool { code, _ := in.get("/readyz"); return code == 503 })
	close(proceed)
	select {
	case err := <-in.done:
		in.stopped = true
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not finish")
	}
	if !in.has("out", "inflight.jpg") || !in.has("done", "inflight.jpg") {
		t.Errorf("frame in flight not completed: out=%v done=%v", in.names("out"), in.names("done"))
	}
	if !in.has("inbox", "later.jpg") {
		t.Errorf("frame not started should stay in (or return to) inbox/: inbox=%v", in.names("inbox"))
	}
	assertClean(t, in)
}

// TestDrainTimeoutReleasesFrame: a frame that outlasts shutdown.drain_timeout
// is cancelled through its context and returned to inbox/.
func TestDrainTimeoutReleasesFrame(t *testing.T) {
	entered := make(chan struct{}, 1)
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		entered <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}}
	in := start(t, setup{backend: fb, toml: "[shutdown]\ndrain_timeout = \"200ms\"\n"})
	in.waitReady()
	orig := testJPEG(t, 48, 48)
	in.drop("slow.jpg", orig)
	<-entered
	t0 := time.Now()
	in.stop()
	if d := time.Since(t0); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %v, want about the 200ms drain timeout", d)
	}
	got, err := os.ReadFile(filepath.Join(in.dir("inbox"), "slow.jpg"))
	if err != nil || !bytes.Equal(got, orig) {
		t.Errorf("frame not returned intact to inbox/: %v", err)
	}
	if in.has("out", "slow.jpg") {
		t.Error("cancelled frame has an output")
	}
	assertClean(t, in)
}

func assertClean(t *testing.T, in *instance) {
	t.Helper()
	if w := in.names("work"); len(w) != 0 {
		t.Errorf("work/ not empty after drain: %v", w)
	}
	for _, n := range in.names("out") {
		if strings.HasPrefix(n, ".") {
			t.Errorf("temporary file left in out/: %s", n)
		}
	}
}

// TestReloadAppliesLiveKeysAndReportsRestartKeys covers SIGHUP: live keys
// change, restart-only keys are named in the log, a broken file is ignored.
func TestReloadAppliesLiveKeysAndReportsRestartKeys(t *testing.T) {
	sock, msgs := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", sock)
	in := start(t, setup{toml: "[log]\nlevel = \"info\"\nformat = \"json\"\n"})
	in.waitReady()
	for m := recv(t, msgs); !strings.HasPrefix(m, "READY=1"); m = recv(t, msgs) {
	}
	doc := testConfig("[log]\nlevel = \"debug\"\nformat = \"json\"\n[spool]\nroot = \"elsewhere\"\nsettle = \"50ms\"\nrescan = \"200ms\"\nqueue_size = 4\n[output]\njpeg_quality = 70\n")
	if err := os.WriteFile(in.cfgPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	in.sigs <- syscall.SIGHUP
	in.eventually(5*time.Second, "reload logged", func() bool { return len(in.logs.lines("configuration reloaded")) == 1 })
	// systemd sees the reload begin and end (RELOADING=1 ... READY=1).
	for m := recv(t, msgs); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC="); m = recv(t, msgs) {
		if strings.HasPrefix(m, "READY=1") {
			t.Fatalf("READY=1 before RELOADING=1")
		}
	}
	for m := recv(t, msgs); !strings.HasPrefix(m, "READY=1"); m = recv(t, msgs) {
	}
	line := in.logs.lines("configuration reloaded")[0]
	if got := line["applied"]; !equalList(got, "output.jpeg_quality", "log.level") {
		t.Errorf("applied = %v", got)
	}
	if got := line["needs_restart"]; !equalList(got, "spool.root") {
		t.Errorf("needs_restart = %v", got)
	}
	restart := in.logs.lines("changed key needs a restart to take effect")
	if len(restart) != 1 || restart[0]["key"] != "spool.root" {
		t.Errorf("restart lines: %v", restart)
	}
	if v := in.metric(`hidiffd_config_reloads_total{result="ok"}`); v != "1" {
		t.Errorf("reloads ok = %q", v)
	}

	// A broken file: logged with key and line, old configuration kept (the
	// spool still works where it was).
	if err := os.WriteFile(in.cfgPath, []byte("[output]\njpeg_quality = \"high\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.sigs <- syscall.SIGHUP
	in.eventually(5*time.Second, "failed reload logged", func() bool {
		return len(in.logs.lines("reload failed; keeping the running configuration")) == 1
	})
	bad := in.logs.lines("reload failed; keeping the running configuration")[0]
	if e, _ := bad["error"].(string); !strings.Contains(e, ":2: output.jpeg_quality") {
		t.Errorf("reload error should name key and line: %q", e)
	}
	in.drop("after.jpg", testJPEG(t, 40, 40))
	in.eventually(10*time.Second, "processing goes on", func() bool { return in.has("out", "after.jpg") })
	in.stop()
}

func equalList(v any, want ...string) bool {
	got, _ := v.([]any)
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestStartupErrors: a spool root that cannot be created and a model that
// cannot load both stop the start with an error naming the key.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(testConfig("[spool]\nroot = \"file/spool\"\n")), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Config: cfg, ConfigPath: path, LogOutput: &syncBuffer{}, Signals: make(chan os.Signal)})
	if err == nil || !strings.Contains(err.Error(), "spool.root") {
		t.Errorf("spool under a file: %v", err)
	}

	os.WriteFile(path, []byte(testConfig("[model]\ndir = \"missing-model\"\n")), 0o644)
	cfg, _ = config.Load(path)
	err = Run(context.Background(), Options{Config: cfg, ConfigPath: path, LogOutput: &syncBuffer{}, Signals: make(chan os.Signal)})
	if err == nil || !strings.Contains(err.Error(), "model.dir") || !strings.Contains(err.Error(), "c.toml:") {
		t.Errorf("missing model: %v", err)
	}
}

// TestSigtermDuringModelLoad: a stop while the model loads ends start-up
// cleanly (exit 0, no READY=1), with STOPPING=1 sent.
func TestSigtermDuringModelLoad(t *testing.T) {
	sock, msgs := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", sock)
	nlog := recordNotify(t, sock, msgs)
	loading := make(chan struct{})
	release := make(chan struct{})
	in := start(t, setup{openBackend: func() error { close(loading); <-release; return nil }})
	<-loading
	in.get("/metrics") // a scrape during start-up must be safe (run with -race)
	in.sigs <- syscall.SIGTERM
	in.eventually(5*time.Second, "readyz draining", func() bool {
		_, body := in.get("/readyz")
		return strings.Contains(body, "draining")
	})
	close(release)
	in.stop()
	end := nlog.mark("end")
	all := nlog.all()[:end] // everything the daemon sent
	joined := strings.Join(all, "|")
	if strings.Contains(joined, "READY=1") || !strings.Contains(joined, "STOPPING=1") {
		t.Errorf("messages: %q", all)
	}
}

// stoppingIntake is a watcher that fails after start-up: once the decode
// loop has asked for its channel.
type stoppingIntake struct {
	ch      chan string
	asked   chan struct{}
	askOnce *sync.Once
}

func newStoppingIntake() stoppingIntake {
	return stoppingIntake{ch: make(chan string), asked: make(chan struct{}), askOnce: new(sync.Once)}
}

func (s stoppingIntake) Run(ctx context.Context) error {
	select {
	case <-s.asked:
	case <-ctx.Done():
	}
	close(s.ch)
	return errors.New("inbox vanished")
}
func (s stoppingIntake) Ready() <-chan string {
	s.askOnce.Do(func() { close(s.asked) })
	return s.ch
}
func (s stoppingIntake) Done(string) {}

// TestIntakeFailureExitsNonZero: a daemon without intake must not sit there
// looking healthy; it drains and returns an error so systemd restarts it.
func TestIntakeFailureExitsNonZero(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(testConfig("")), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{
		Config: cfg, ConfigPath: path, LogOutput: &syncBuffer{}, Signals: make(chan os.Signal),
		OpenBackend: func(*config.Config) (deblur.Backend, error) { return &fakeBackend{}, nil },
		NewIntake: func(string, *config.Config, watch.Logger) (Intake, error) {
			return newStoppingIntake(), nil
		},
	})
	if err == nil || !strings.Contains(err.Error(), "inbox vanished") {
		t.Errorf("Run = %v", err)
	}
}
