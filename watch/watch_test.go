package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"hidiffd/internal/clock/clocktest"
)

type delivery struct {
	name string
	at   time.Time
}

// harness runs a Watcher on a fresh inbox and records every delivery. With
// autoDone, each received name is Done'd at once (the file stays, so tests
// that use it remove or move files themselves).
type harness struct {
	t     *testing.T
	inbox string
	w     *Watcher
	mu    sync.Mutex
	got   []delivery
	seen  chan delivery
	stop  func()
	logMu sync.Mutex
	logs  []string
	// clock drives the watcher of tests started with startFake.
	clock *clocktest.Fake
}

func newHarness(t *testing.T, inbox string, opts Options) *harness {
	t.Helper()
	if inbox == "" {
		inbox = filepath.Join(t.TempDir(), "inbox")
		if err := os.Mkdir(inbox, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	return &harness{t: t, inbox: inbox, seen: make(chan delivery, 100000), clock: clocktest.New()}
}

func (h *harness) start(opts Options) { h.startWith(opts, false) }

// startFake starts the watcher on the harness's fake clock: settle periods
// and rescans pass only when the test calls advance. It returns once Run
// has scanned the backlog and is waiting.
func (h *harness) startFake(opts Options) {
	h.t.Helper()
	opts.Clock = h.clock
	h.startWith(opts, false)
	h.until("the first scan", func() bool { return h.w.Stats().Scans > 0 })
}

// until waits until cond holds, checking it after each turn of Run's loop
// (the fake clock sees every turn), so it needs no sleep; the deadline is
// real time and only bounds a test that would otherwise hang. Waiting is
// needed where the kernel's inotify events arrive when they do.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		_, next := h.clock.Turns() // before cond, so no turn is missed
		if cond() {
			return
		}
		select {
		case <-next:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; stats %+v", what, h.w.Stats())
		}
	}
}

// advance moves the fake clock and, if that woke the watcher, waits until
// it has handled the wake-up (checked, rescanned, queued what is stable).
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	n, _ := h.clock.Turns()
	if h.clock.Advance(d) {
		h.until("the watcher to handle the wake-up", func() bool { m, _ := h.clock.Turns(); return m > n })
	}
}

// quiet fails if anything was delivered beyond the held names still
// awaiting Done. Meant after advance: the watcher has then handled the
// wake-up, so anything it queued shows in Stats; a queued name is sent to
// the harness's reader at once, and the Stats published after that send
// count it as Delivered.
func (h *harness) quiet(held int) {
	h.t.Helper()
	h.until("the queue to be empty", func() bool { return h.w.Stats().Queued == 0 })
	if s := h.w.Stats(); s.Delivered != held {
		h.t.Fatalf("stats %+v: something new was delivered (%d names held)", s, held)
	}
	select {
	case d := <-h.seen:
		h.t.Fatalf("unexpected delivery of %q", d.name)
	default:
	}
}

// drop puts a finished file into the inbox with one rename, as cameras that
// write elsewhere do: one inotify event, so a test knows when the watcher
// has seen it (Settling goes up) and no late event moves its settle time.
func (h *harness) drop(name, content string) {
	h.t.Helper()
	settling := h.w.Stats().Settling
	h.put(name, content)
	h.until(name+" to be seen", func() bool { return h.w.Stats().Settling > settling })
}

// put is drop without waiting for the watcher to see the file.
func (h *harness) put(name, content string) {
	h.t.Helper()
	staging := filepath.Join(filepath.Dir(h.inbox), "staging")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(staging, name), h.path(name)); err != nil {
		h.t.Fatal(err)
	}
}

// startWith(opts, true) leaves reading Ready to the test itself, so the test
// is the consumer that applies back-pressure.
func (h *harness) startWith(opts Options, manual bool) {
	h.t.Helper()
	w, err := New(h.inbox, opts, func(level, msg string, kv ...any) {
		h.logMu.Lock()
		h.logs = append(h.logs, level+": "+msg+" "+fmt.Sprint(kv...))
		h.logMu.Unlock()
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(ctx) }()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		if manual {
			return
		}
		for name := range w.Ready() {
			d := delivery{name, time.Now()}
			h.mu.Lock()
			h.got = append(h.got, d)
			h.mu.Unlock()
			h.seen <- d
		}
	}()
	h.stop = func() {
		cancel()
		if err := <-runDone; err != nil {
			h.t.Errorf("Run: %v", err)
		}
		<-readDone // Ready is closed when Run returns
	}
	h.t.Cleanup(h.stop)
}

func (h *harness) path(name string) string { return filepath.Join(h.inbox, name) }

func (h *harness) write(name, content string) time.Time {
	h.t.Helper()
	if err := os.WriteFile(h.path(name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return time.Now()
}

// next waits for one delivery.
func (h *harness) next(timeout time.Duration) (delivery, bool) {
	select {
	case d := <-h.seen:
		return d, true
	case <-time.After(timeout):
		return delivery{}, false
	}
}

func (h *harness) expect(timeout time.Duration, names ...string) []delivery {
	h.t.Helper()
	var out []delivery
	for range names {
		d, ok := h.next(timeout)
		if !ok {
			h.t.Fatalf("timed out; got %v so far, want %v", out, names)
		}
		out = append(out, d)
	}
	for i, d := range out {
		if d.name != names[i] {
			h.t.Fatalf("delivered %v, want %v", out, names)
		}
	}
	return out
}

func TestIgnored(t *testing.T) {
	for name, want := range map[string]bool{
		".hidden.jpg": true, "a.jpg.tmp": true, "a.JPG.PART": true, "a.part": true, "": true,
		".x.hidiffd-tmp-1234": true, "a.jpg": false, "tmp": false, "a.tmp.jpg": false, "part.png": false,
	} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			if Ignored(name) != want {
				t.Errorf("Ignored(%q) = %v", name, !want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(filepath.Join(dir, "missing"), Options{}, nil); err == nil {
		t.Error("missing inbox accepted")
	}
	f := filepath.Join(dir, "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := New(f, Options{}, nil); err == nil {
		t.Error("file as inbox accepted")
	}
	if _, err := New(dir, Options{Settle: -1}, nil); err == nil {
		t.Error("negative settle accepted")
	}
}

// Files already in the inbox at start are delivered, oldest mtime first;
// ignored names are not.
func TestBacklogScanOldestFirst(t *testing.T) {
	opts := Options{Settle: 100 * time.Millisecond, Rescan: time.Minute}
	h := newHarness(t, "", opts)
	base := time.Now().Add(-time.Hour)
	names := []string{"e.jpg", "d.jpg", "c.png", "b.jpg", "a.jpg"} // oldest first
	for i, n := range names {
		h.write(n, n)
		mt := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(h.path(n), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{".hidden.jpg", "x.jpg.tmp", "y.jpg.part"} {
		h.write(n, n)
	}
	h.startFake(opts)
	h.quiet(0) // not before the settle period
	h.advance(opts.Settle)
	h.expect(5*time.Second, names...)
	for range 5 {
		h.advance(opts.Settle)
	}
	h.quiet(5)
	if s := h.w.Stats(); s.Delivered != 5 || s.Settling != 0 || s.Queued != 0 || s.Polling {
		t.Fatalf("stats %+v", s)
	}
}

// A new file is delivered once, exactly one settle period after it appears
// (on the fake clock), and not again while it is held (no Done) even across
// rescans.
func TestNewFileAfterSettleOnce(t *testing.T) {
	opts := Options{Settle: 300 * time.Millisecond, Rescan: 100 * time.Millisecond}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	h.drop("new.jpg", "data")
	h.advance(opts.Settle - time.Millisecond)
	h.quiet(0)
	h.advance(time.Millisecond)
	h.expect(5*time.Second, "new.jpg")
	// Held: rescans do not deliver it again.
	for range 6 {
		h.advance(opts.Rescan)
	}
	h.quiet(1)

	// Done without moving (a claim that failed): the next rescan finds it,
	// and it is delivered a settle period later.
	h.w.Done("new.jpg")
	h.until("Done to be handled", func() bool { return h.w.Stats().Delivered == 0 })
	h.advance(opts.Rescan)
	h.until("the rescan to find it", func() bool { return h.w.Stats().Settling == 1 })
	h.advance(opts.Settle)
	h.expect(5*time.Second, "new.jpg")

	// Claimed (moved away) and Done: not delivered again...
	claimed := filepath.Join(t.TempDir(), "new.jpg")
	if err := os.Rename(h.path("new.jpg"), claimed); err != nil {
		t.Fatal(err)
	}
	h.w.Done("new.jpg")
	h.until("Done to be handled", func() bool { return h.w.Stats().Delivered == 0 })
	for range 6 {
		h.advance(opts.Rescan)
	}
	h.quiet(0)
	// ...until a new file with that name appears.
	h.drop("new.jpg", "second")
	h.advance(opts.Settle)
	h.expect(5*time.Second, "new.jpg")
}

// A NEW file with a delivered name, dropped before the daemon says Done, is
// delivered after Done (the name was marked dirty by its events).
func TestSameNameWhileHeld(t *testing.T) {
	opts := Options{Settle: 100 * time.Millisecond, Rescan: time.Minute}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	h.drop("f.jpg", "one")
	h.advance(opts.Settle)
	h.expect(5*time.Second, "f.jpg")
	os.Rename(h.path("f.jpg"), filepath.Join(t.TempDir(), "claimed")) // the claim
	// The second drop: its event marks the held name dirty (nothing in
	// Stats shows that, so the test cannot wait for it; if the event comes
	// only after Done, it admits the file then, which ends the same way).
	h.put("f.jpg", "two")
	for range 4 {
		h.advance(opts.Settle)
	}
	h.quiet(1) // still held
	h.w.Done("f.jpg")
	h.until("the second file to settle", func() bool { return h.w.Stats().Settling == 1 })
	h.advance(opts.Settle)
	h.expect(5*time.Second, "f.jpg")
}

// A writer that appends in place every 100ms for 1s must not be delivered
// before it stops, and is delivered exactly one settle period after its
// last write (all on the fake clock: a loaded machine cannot make a pause
// between two writes look like the end of the file).
func TestSlowWriterInPlace(t *testing.T) {
	opts := Options{Settle: 400 * time.Millisecond, Rescan: 200 * time.Millisecond}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	f, err := os.OpenFile(h.path("slow.jpg"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h.until("the file to be seen", func() bool { return h.w.Stats().Settling == 1 })
	const step = 100 * time.Millisecond
	for i := 0; i < 11; i++ {
		n, _ := h.clock.Turns()
		if _, err := f.Write([]byte(strings.Repeat("x", 1000))); err != nil {
			t.Fatal(err)
		}
		// One write, one inotify event (IN_MODIFY), one turn of the
		// watcher, which takes the fake now as the file's last change.
		h.until(fmt.Sprintf("the event of write %d", i), func() bool { m, _ := h.clock.Turns(); return m > n })
		if i < 10 {
			h.advance(step)
			h.quiet(0)
		}
	}
	h.advance(opts.Settle - time.Millisecond)
	h.quiet(0)
	h.advance(time.Millisecond)
	h.expect(5*time.Second, "slow.jpg")
	fi, _ := os.Stat(h.path("slow.jpg"))
	if fi.Size() != 11000 {
		t.Fatalf("size %d", fi.Size())
	}
}

// Dotfiles, .tmp and .part are ignored until renamed to a normal name; a file
// renamed in from another folder is delivered.
func TestIgnoredUntilRenamedAndRenameIn(t *testing.T) {
	opts := Options{Settle: 100 * time.Millisecond, Rescan: 150 * time.Millisecond}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	for _, n := range []string{".a.jpg", "b.jpg.tmp", "c.jpg.part"} {
		h.write(n, n)
	}
	for range 4 { // several settle periods and rescans
		h.advance(opts.Settle)
	}
	h.quiet(0)
	if s := h.w.Stats(); s.Settling != 0 {
		t.Fatalf("ignored names observed: %+v", s)
	}
	for _, n := range []string{".a.jpg", "b.jpg.tmp", "c.jpg.part"} {
		to := strings.TrimPrefix(strings.TrimSuffix(strings.TrimSuffix(n, ".tmp"), ".part"), ".")
		if err := os.Rename(h.path(n), h.path(to)); err != nil {
			t.Fatal(err)
		}
	}
	h.until("the renamed files to be seen", func() bool { return h.w.Stats().Settling == 3 })
	h.advance(opts.Settle)
	got := map[string]bool{}
	for range 3 {
		d, ok := h.next(5 * time.Second)
		if !ok {
			t.Fatalf("got only %v", got)
		}
		got[d.name] = true
	}
	if !got["a.jpg"] || !got["b.jpg"] || !got["c.jpg"] {
		t.Fatalf("got %v", got)
	}
	// Rename in from a sibling folder (same filesystem), as cameras that
	// write elsewhere and move the finished frame do.
	h.drop("moved.png", "png")
	h.advance(opts.Settle)
	h.expect(5*time.Second, "moved.png")
}

// Symlinks and fifos are delivered at once, without settling: the fake
// clock does not move at all here.
func TestNonRegularImmediate(t *testing.T) {
	opts := Options{Settle: 3 * time.Second, Rescan: time.Minute}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	if err := os.Symlink("/etc/hostname", h.path("link.jpg")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(h.path("pipe.jpg"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 2 {
		d, ok := h.next(10 * time.Second)
		if !ok {
			t.Fatalf("non-regular entries not delivered before the settle period: %v", got)
		}
		got[d.name] = true
	}
	if !got["link.jpg"] || !got["pipe.jpg"] {
		t.Fatalf("got %v", got)
	}
}

// TestFolderSettles (issue 12): a folder being filled (`cp -r`, here files
// written into it and into a subfolder at intervals shorter than Settle) is
// not delivered until nothing inside it has changed for Settle.
//
// On the fake clock: a file every Settle/4, the folder never delivered
// meanwhile, then delivered exactly one settle period after the check that
// saw the last file (the folder's inside gives no inotify event: only the
// watcher's stat at each check sees it).
func TestFolderSettles(t *testing.T) {
	opts := Options{Settle: 400 * time.Millisecond, Rescan: time.Hour}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	dir := h.path("photos")
	staged := filepath.Join(t.TempDir(), "photos")
	if err := os.MkdirAll(filepath.Join(staged, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, dir); err != nil { // one event, as drop
		t.Fatal(err)
	}
	h.until("the folder to be seen", func() bool { return h.w.Stats().Settling == 1 })
	step := opts.Settle / 4
	for i := range 8 {
		p := filepath.Join(dir, fmt.Sprintf("%d.jpg", i))
		if i%2 == 1 {
			p = filepath.Join(dir, "sub", fmt.Sprintf("%d.jpg", i)) // deeper than the folder's own mtime sees
		}
		if err := os.WriteFile(p, []byte(strings.Repeat("x", 100+i)), 0o644); err != nil {
			t.Fatal(err)
		}
		h.advance(step)
		h.quiet(0)
	}
	// The last file was written at 7 steps; the check at 8 steps saw it (a
	// check is due at most a settle period after the last one).
	for range 3 {
		h.advance(step)
		h.quiet(0)
	}
	h.advance(step)
	h.expect(10*time.Second, "photos")
}

// Where inotify cannot be set up the watcher polls with its rescans.
func TestPollingFallback(t *testing.T) {
	orig := newFSWatcher
	newFSWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("inotify: too many instances") }
	defer func() { newFSWatcher = orig }()
	opts := Options{Settle: 100 * time.Millisecond, Rescan: 150 * time.Millisecond}
	h := newHarness(t, "", opts)
	h.write("old.jpg", "x")
	h.start(opts)
	h.expect(5*time.Second, "old.jpg")
	h.write("new.jpg", "y")
	h.expect(5*time.Second, "new.jpg")
	if !h.w.Stats().Polling {
		t.Fatal("stats do not say polling")
	}
	h.logMu.Lock()
	defer h.logMu.Unlock()
	if len(h.logs) == 0 || !strings.Contains(strings.Join(h.logs, "\n"), "polling") {
		t.Fatalf("fallback not logged: %v", h.logs)
	}
}

// A large backlog plus a producer faster than the consumer: nothing is lost
// or delivered twice, and the observation set and queue stay within their
// caps (the rest waits in the folder for the next scan).
func TestBoundedBacklog(t *testing.T) {
	const (
		backlog  = 1000
		live     = 1000
		capSet   = 100
		capQueue = 10
	)
	opts := Options{Settle: 50 * time.Millisecond, Rescan: 300 * time.Millisecond, QueueSize: capQueue, MaxSettling: capSet}
	h := newHarness(t, "", opts)
	for i := 0; i < backlog; i++ {
		h.write(fmt.Sprintf("backlog-%04d.jpg", i), "b")
	}
	claimed := filepath.Join(filepath.Dir(h.inbox), "work")
	os.Mkdir(claimed, 0o750)
	h.startWith(opts, true)

	go func() { // producer: ~1000 files in well under a second, tmp-then-rename for half
		for i := 0; i < live; i++ {
			name := fmt.Sprintf("live-%04d.jpg", i)
			if i%2 == 0 {
				os.WriteFile(h.path("."+name+".tmp"), []byte("l"), 0o644)
				os.Rename(h.path("."+name+".tmp"), h.path(name))
			} else {
				os.WriteFile(h.path(name), []byte("l"), 0o644)
			}
		}
	}()

	watchStats := make(chan Stats, 1)
	stopStats := make(chan struct{})
	go func() { // sample the bookkeeping while the test runs
		var worst Stats
		for {
			s := h.w.Stats()
			if s.Settling > worst.Settling {
				worst.Settling = s.Settling
			}
			if s.Queued > worst.Queued {
				worst.Queued = s.Queued
			}
			if s.Delivered > worst.Delivered {
				worst.Delivered = s.Delivered
			}
			select {
			case <-stopStats:
				watchStats <- worst
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	seen := map[string]int{}
	deadline := time.After(90 * time.Second)
	for len(seen) < backlog+live {
		select {
		case name := <-h.w.Ready():
			d := delivery{name: name}
			seen[d.name]++
			if seen[d.name] > 1 {
				t.Fatalf("%s delivered twice", d.name)
			}
			// Pacing, not a wait for a condition: this test runs on the
			// real clock on purpose (a real producer racing the kernel's
			// events), with a consumer slower than the producer.
			time.Sleep(time.Millisecond)
			if err := os.Rename(h.path(d.name), filepath.Join(claimed, d.name)); err != nil {
				t.Fatalf("claim %s: %v", d.name, err)
			}
			h.w.Done(d.name)
		case <-deadline:
			t.Fatalf("only %d of %d delivered; stats %+v", len(seen), backlog+live, h.w.Stats())
		}
	}
	close(stopStats)
	worst := <-watchStats
	final := h.w.Stats()
	t.Logf("delivered %d; peak settling %d (cap %d), worst queued %d (cap %d), scans %d, missed %d",
		len(seen), final.PeakSettling, capSet, worst.Queued, capQueue, final.Scans, final.Missed)
	if final.PeakSettling > capSet || worst.Settling > capSet {
		t.Fatalf("observation set grew to %d, cap %d", final.PeakSettling, capSet)
	}
	if worst.Queued > capQueue {
		t.Fatalf("queue grew to %d, cap %d", worst.Queued, capQueue)
	}
	if worst.Delivered > 2 {
		t.Fatalf("%d names held at once by a one-at-a-time consumer", worst.Delivered)
	}
	if final.Missed == 0 {
		t.Fatal("the cap never applied; the test does not test the bound")
	}
	select {
	case name := <-h.w.Ready():
		t.Fatalf("extra delivery of %s", name)
	case <-time.After(500 * time.Millisecond):
	}
	es, _ := os.ReadDir(h.inbox)
	if len(es) != 0 {
		t.Fatalf("%d files left in inbox", len(es))
	}
}

func TestRunTwice(t *testing.T) {
	clock := clocktest.New()
	w, err := New(t.TempDir(), Options{Clock: clock}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	_, turned := clock.Turns()
	go func() { errc <- w.Run(ctx) }()
	select { // the first Run waits on the clock: it is surely running
	case <-turned:
	case <-time.After(10 * time.Second):
		t.Fatal("the first Run never reached its loop")
	}
	if err := w.Run(ctx); err == nil {
		t.Fatal("second Run accepted")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Ready(); ok {
		t.Fatal("Ready not closed after Run")
	}
	w.Done("x") // must not block after Run returned
}

// TestHealthWhileInboxGone: removing the inbox makes Health say so at once
// (the watch sees the removal), and a long rescan period does not delay the
// recovery: a failed scan is retried every second (of the fake clock).
// Files dropped into the new inbox are found.
func TestHealthWhileInboxGone(t *testing.T) {
	opts := Options{Settle: 50 * time.Millisecond, Rescan: time.Hour}
	h := newHarness(t, "", opts)
	h.startFake(opts)
	if err := h.w.Health(); err != nil {
		t.Fatalf("Health at start: %v", err)
	}
	if err := os.Remove(h.inbox); err != nil {
		t.Fatal(err)
	}
	h.until("Health to report the missing inbox", func() bool {
		err := h.w.Health()
		return err != nil && strings.Contains(err.Error(), "no such file")
	})
	if err := os.Mkdir(h.inbox, 0o750); err != nil {
		t.Fatal(err)
	}
	h.advance(time.Second - time.Millisecond)
	if h.w.Health() == nil {
		t.Fatal("Health recovered before the retry was due")
	}
	h.advance(time.Millisecond)
	if err := h.w.Health(); err != nil {
		t.Fatalf("Health one second after the inbox came back: %v", err)
	}
	h.drop("after.jpg", "x")
	h.advance(opts.Settle)
	h.expect(10*time.Second, "after.jpg")
}
