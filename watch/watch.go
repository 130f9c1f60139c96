// Package watch is hidiffd's folder intake: it watches inbox/ and hands out
// the names of files that are complete ("stable") so the daemon can claim
// them.
//
// Sources of names, all feeding one pending set:
//   - a backlog scan at start and a periodic rescan (Options.Rescan), which
//     also covers inotify queue overflow, events lost while the pending set
//     was full, and network filesystems where inotify sees nothing;
//   - fsnotify events (Create, Write, Chmod, Rename into the folder);
//   - polling only (every Rescan) where inotify cannot be set up.
//
// A regular file is stable once its size, mtime, ctime and inode have not
// changed for Options.Settle (writers that write in place; writers that use
// tmp-then-rename produce a file that is stable at once and is delivered one
// Settle after it appears). A folder is stable once neither it nor anything
// inside it (entries, sizes, times; up to 10000 entries) has changed for
// Settle, so one still being copied in is not judged half-copied. Symlinks,
// fifos and other non-regular entries are delivered at once, so the daemon
// can fail them.
// Dotfiles and names ending in .tmp or .part are ignored until renamed.
//
// Memory is bounded whatever the backlog: per-file state exists only for
// files being observed (at most Options.MaxSettling, default 4096; this
// includes stable files waiting for room in the queue), files in the queue
// (at most Options.QueueSize) and files handed out but not yet Done. When the
// observation set is full, further names are not remembered: the next scan
// finds them again (an early rescan runs once half the set has drained).
// Within one scan the oldest files (by mtime) are admitted and delivered
// first; the scan holds at most as many candidates as there are free places.
package watch

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"hidiffd/internal/clock"
)

// Logger receives the watcher's log lines. level is "debug", "info", "warn"
// or "error"; kv are alternating keys and values (zerolog's Event.Fields
// accepts them as they are). It matches spool.Logger.
type Logger = func(level, msg string, kv ...any)

// Options configure a Watcher. Zero values take the defaults.
type Options struct {
	// Settle: a regular file whose size, mtime, ctime and inode stay
	// unchanged this long is stable. Default 1s.
	Settle time.Duration
	// Rescan: period of the full folder scan. Default 30s.
	Rescan time.Duration
	// QueueSize bounds the names that are stable and waiting to be received
	// from Ready. Default 64.
	QueueSize int
	// MaxSettling caps the files under observation (settling, or stable and
	// waiting for queue room). Default 4096. Beyond it, files are left to the
	// next scan.
	MaxSettling int
	// Clock is the time source of settling and rescans; nil is the system
	// clock. Tests pass a fake one to step through settle periods without
	// sleeping.
	Clock clock.Clock
}

// DefaultMaxSettling is the default cap of the observation set. At about
// 200 bytes per entry it bounds the watcher's per-file memory near 1 MB.
const DefaultMaxSettling = 4096

// Stats is a snapshot of the watcher's bookkeeping, for metrics and tests.
type Stats struct {
	Settling     int    // files under observation now
	Queued       int    // stable names waiting to be received from Ready
	Delivered    int    // names received from Ready, awaiting Done
	PeakSettling int    // high-water mark of Settling
	Scans        uint64 // full scans done
	Overflows    uint64 // inotify queue overflows seen
	Missed       uint64 // times a file was left to a later scan (observation set full)
	Polling      bool   // true when inotify is not in use
	// ScanError is why the last scan of the inbox failed ("" when it
	// worked): the inbox was removed, replaced or made unreadable. While
	// it is set no new file can be found; the scan is retried every second.
	ScanError string
}

// Watcher watches one inbox folder. Create it with New, start Run, read
// Ready, and call Done for every name received.
type Watcher struct {
	inbox string
	opts  Options
	log   Logger
	out   chan string

	doneMu   sync.Mutex
	doneList []string
	doneKick chan struct{}

	running atomic.Bool

	statsMu sync.Mutex
	stats   Stats

	// judged holds, for each name handed out and not yet Done, the size and
	// mtime the file had when it was judged complete (Observed).
	judgedMu sync.Mutex
	judged   map[string]obs
}

// Ignored reports whether a name in inbox/ is never delivered: dotfiles
// (hidden files, the spool's own temporary files, rsync's .name.XXXX) and
// names ending in .tmp or .part (in-progress downloads and copies). They are
// picked up once renamed to a normal name.
func Ignored(name string) bool {
	if name == "" || strings.HasPrefix(name, ".") {
		return true
	}
	lower := strings.ToLower(name)
	return strings.HasSuffix(lower, ".tmp") || strings.HasSuffix(lower, ".part")
}

// New checks that inbox is a directory and applies defaults; Run starts the
// watching. log may be nil.
func New(inbox string, opts Options, log Logger) (*Watcher, error) {
	if opts.Settle < 0 || opts.Rescan < 0 || opts.QueueSize < 0 || opts.MaxSettling < 0 {
		return nil, fmt.Errorf("watch: negative option in %+v", opts)
	}
	if opts.Settle == 0 {
		opts.Settle = time.Second
	}
	if opts.Rescan == 0 {
		opts.Rescan = 30 * time.Second
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = 64
	}
	if opts.MaxSettling == 0 {
		opts.MaxSettling = DefaultMaxSettling
	}
	if opts.Clock == nil {
		opts.Clock = clock.System{}
	}
	fi, err := os.Stat(inbox)
	if err != nil {
		return nil, fmt.Errorf("watch: inbox: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("watch: inbox %s is not a directory", inbox)
	}
	if log == nil {
		log = func(string, string, ...any) {}
	}
	return &Watcher{
		inbox:    filepath.Clean(inbox),
		opts:     opts,
		log:      log,
		out:      make(chan string),
		doneKick: make(chan struct{}, 1),
		judged:   map[string]obs{},
	}, nil
}

// Ready delivers names (not paths) of files in inbox/ that are ready to be
// claimed, oldest first where known. A name is delivered once and then held
// until Done is called for it. The channel is closed when Run
// returns.
func (w *Watcher) Ready() <-chan string { return w.out }

// Done tells the watcher the daemon is finished with a delivered name
// (claimed, failed or released it). The name is delivered again only if a
// file of that name is (again) in inbox/ and stable: a new file dropped with
// the same name, or a frame put back by spool.Release. Safe to call from any
// goroutine, also after Run returned.
func (w *Watcher) Done(name string) {
	w.judgedMu.Lock()
	delete(w.judged, name)
	w.judgedMu.Unlock()
	w.doneMu.Lock()
	w.doneList = append(w.doneList, name)
	w.doneMu.Unlock()
	select {
	case w.doneKick <- struct{}{}:
	default:
	}
}

// Observed returns the size and modification time a delivered file had when
// the watcher judged it complete, until Done: the daemon compares them with
// the file it claimed, and puts back a file that changed since (a writer
// that paused for longer than Settle and went on).
func (w *Watcher) Observed(name string) (size int64, mtime time.Time, ok bool) {
	w.judgedMu.Lock()
	defer w.judgedMu.Unlock()
	o, ok := w.judged[name]
	if !ok {
		return 0, time.Time{}, false
	}
	return o.size, time.Unix(0, o.mtime), true
}

// Health is nil while the watcher can scan the inbox, else why it cannot
// (the inbox was removed, replaced by a file, made unreadable): the daemon
// is then not ready, since no new frame can be found.
func (w *Watcher) Health() error {
	if e := w.Stats().ScanError; e != "" {
		return fmt.Errorf("cannot scan the inbox: %s", e)
	}
	return nil
}

// Stats returns a snapshot of the watcher's bookkeeping.
func (w *Watcher) Stats() Stats {
	w.statsMu.Lock()
	defer w.statsMu.Unlock()
	return w.stats
}

// newFSWatcher is replaced by tests to exercise the polling fallback.
var newFSWatcher = fsnotify.NewWatcher

// Per-file states.
const (
	settling  = iota // observed until stable (or stable, waiting for room)
	queued           // in the internal queue
	delivered        // received from Ready, awaiting Done
)

// obs is what a stat says about a file; any difference is a change.
type obs struct {
	size         int64
	mtime, ctime int64
	ino          uint64
	mode         fs.FileMode
}

// observe describes an entry of the inbox at path. For a folder it also
// sums up what is inside (entries, bytes, newest mtime and ctime, at most
// maxDirWalk entries deep down), so a folder still being filled (`cp -r`)
// is not stable until its contents are.
func observe(path string, fi fs.FileInfo) obs {
	o := obs{size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		o.ctime = st.Ctim.Nano()
		o.ino = uint64(st.Ino)
	}
	if fi.IsDir() {
		n := 0
		filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == path {
				return nil
			}
			if n++; n > maxDirWalk {
				return filepath.SkipAll
			}
			if i, err := d.Info(); err == nil {
				o.size += i.Size() + 1
				o.mtime = max(o.mtime, i.ModTime().UnixNano())
				if st, ok := i.Sys().(*syscall.Stat_t); ok {
					o.ctime = max(o.ctime, st.Ctim.Nano())
				}
			}
			return nil
		})
	}
	return o
}

// settles reports whether an entry of this mode must be unchanged for the
// settle period before it is delivered: regular files and folders.
func settles(m fs.FileMode) bool { return m.IsRegular() || m.IsDir() }

// maxDirWalk bounds the entries observe looks at inside a folder.
const maxDirWalk = 10000

type entry struct {
	state      int
	obs        obs
	lastChange time.Time // last time a change was seen (event or stat)
	checkAt    time.Time // next stat due (settling)
	verified   time.Time // last stat that confirmed the observation
	stable     bool      // settling entry that is complete, waiting for room
	dirty      bool      // a Create/Write/Chmod arrived while queued/delivered
}

// loop is the state owned by Run's goroutine.
type loop struct {
	w        *Watcher
	pending  map[string]*entry
	queue    []string
	nSettle  int
	nStable  int
	nextDue  time.Time // earliest checkAt among settling entries (may be early)
	missed   bool      // a file was left out since the last scan
	lastScan time.Time
	scanErr  error     // why the last scan failed (logged once until it works again)
	rescanAt time.Time // the next periodic rescan
	stats    Stats
}

// Run scans the backlog, then follows events, rescans and settles files until
// ctx is cancelled (it then returns nil). It returns an error only if it is
// called twice. It closes Ready on return.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("watch: Run called twice")
	}
	defer close(w.out)

	l := &loop{w: w, pending: make(map[string]*entry)}
	// The watch is set up before the backlog scan, so a file created
	// between the two is seen by one of them.
	in := w.watchInbox(l)
	defer in.close()

	clock := w.opts.Clock
	l.scan(clock.Now())
	l.rescanAt = clock.Now().Add(w.opts.Rescan)

	for {
		now := clock.Now()
		l.promote(now)
		l.publish(w)
		wakeC := clock.After(max(l.nextWake().Sub(now), time.Millisecond))

		var send chan<- string
		var head string
		if len(l.queue) > 0 {
			send, head = w.out, l.queue[0]
		}

		select {
		case <-ctx.Done():
			return nil
		case send <- head:
			l.queue = l.queue[1:]
			if e := l.pending[head]; e != nil && e.state == queued {
				e.state = delivered
			}
		case ev, ok := <-in.events:
			in.onEvent(l, ev, ok)
		case err, ok := <-in.errs:
			in.onError(l, err, ok)
		case <-wakeC:
			l.onWake(in)
		case <-w.doneKick:
			w.doneMu.Lock()
			names := w.doneList
			w.doneList = nil
			w.doneMu.Unlock()
			for _, n := range names {
				l.done(n, clock.Now())
			}
		}
	}
}

// inotifyWatch is the kernel's watch on the inbox, or none (polling): its
// channels are nil then, and a nil channel never fires in Run's select.
type inotifyWatch struct {
	w      *Watcher
	fsw    *fsnotify.Watcher // nil: polling only
	events <-chan fsnotify.Event
	errs   <-chan error
	lost   bool // the inbox folder was removed or renamed; watch it again at a rescan
}

// watchInbox starts the inotify watch on the inbox, or falls back to
// polling at each rescan (noted in l's stats) where inotify is unavailable.
func (w *Watcher) watchInbox(l *loop) *inotifyWatch {
	in := &inotifyWatch{w: w}
	fsw, err := newFSWatcher()
	if err == nil {
		if err = fsw.Add(w.inbox); err != nil {
			fsw.Close()
		}
	}
	if err != nil {
		w.log("warn", "inotify unavailable; polling the inbox instead", "dir", w.inbox,
			"interval", w.opts.Rescan.String(), "error", err.Error())
		l.stats.Polling = true
		return in
	}
	in.fsw, in.events, in.errs = fsw, fsw.Events, fsw.Errors
	return in
}

func (in *inotifyWatch) close() {
	if in.fsw != nil {
		in.fsw.Close()
	}
}

// rewatch watches the inbox again if its watch was lost (the folder was
// removed or renamed and may be back).
func (in *inotifyWatch) rewatch() {
	if in.lost && in.fsw != nil {
		if err := in.fsw.Add(in.w.inbox); err == nil {
			in.lost = false
			in.w.log("info", "inbox folder is back; watching it again", "dir", in.w.inbox)
		}
	}
}

// onEvent handles one inotify event (ok false: the watch closed).
func (in *inotifyWatch) onEvent(l *loop, ev fsnotify.Event, ok bool) {
	w := in.w
	if !ok {
		in.events, in.errs = nil, nil
		l.stats.Polling = true
		w.log("warn", "inotify watch closed; polling the inbox", "dir", w.inbox)
		return
	}
	if ev.Name == w.inbox {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			in.lost = true
			w.log("error", "inbox folder was removed or renamed; retrying at each rescan", "dir", w.inbox)
			l.scan(w.opts.Clock.Now()) // says at once whether the inbox is still there
		}
		return
	}
	l.event(ev, w.opts.Clock.Now())
}

// onError handles an inotify error: an overflow lost events, so the inbox
// is scanned at once.
func (in *inotifyWatch) onError(l *loop, err error, ok bool) {
	w := in.w
	if !ok {
		in.errs = nil
		return
	}
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		l.stats.Overflows++
		w.log("warn", "inotify queue overflowed; rescanning the inbox", "dir", w.inbox)
		l.scan(w.opts.Clock.Now())
		return
	}
	w.log("error", "inotify error", "error", err.Error())
}

// nextWake is when the loop must wake: one wait serves the periodic
// rescan, settle checks, the early rescan and the retry of a failed scan,
// the earliest of them.
func (l *loop) nextWake() time.Time {
	wakeAt := l.rescanAt
	earlier := func(at time.Time) {
		if !at.IsZero() && at.Before(wakeAt) {
			wakeAt = at
		}
	}
	if l.nSettle > 0 {
		earlier(l.nextDue)
	}
	if l.earlyRescanWanted() {
		earlier(l.lastScan.Add(l.earlyGap()))
	}
	if l.scanErr != nil {
		earlier(l.lastScan.Add(l.scanRetry()))
	}
	return wakeAt
}

// earlyRescanWanted: a file was left out of the last scan and there is
// room to settle more, so a rescan comes before the periodic one.
func (l *loop) earlyRescanWanted() bool {
	return l.missed && l.nSettle <= l.w.opts.MaxSettling/2
}

// onWake checks settling files and runs whichever rescan is due: the
// periodic one (which also re-adds a lost watch), the retry of a failed
// scan, or the early one.
func (l *loop) onWake(in *inotifyWatch) {
	now := l.w.opts.Clock.Now()
	l.check(now)
	periodic := !now.Before(l.rescanAt)
	if periodic {
		l.rescanAt = now.Add(l.w.opts.Rescan)
	}
	switch {
	case periodic, l.scanErr != nil && now.Sub(l.lastScan) >= l.scanRetry():
		in.rewatch()
		l.scan(now)
	case l.earlyRescanWanted() && now.Sub(l.lastScan) >= l.earlyGap():
		l.scan(now)
	}
}

// earlyGap is the least time between two scans triggered by a drained
// observation set, so a large backlog is not rescanned in a tight loop.
func (l *loop) earlyGap() time.Duration {
	g := l.w.opts.Settle
	if g < 200*time.Millisecond {
		g = 200 * time.Millisecond
	}
	if g > l.w.opts.Rescan {
		g = l.w.opts.Rescan
	}
	return g
}

func (l *loop) path(name string) string { return filepath.Join(l.w.inbox, name) }

// admit starts observing a file not yet pending. fi may be nil (then it is
// stat'ed). It reports false when the observation set is full.
func (l *loop) admit(name string, fi fs.FileInfo, now time.Time) bool {
	if l.nSettle >= l.w.opts.MaxSettling {
		l.missed = true
		l.stats.Missed++
		return false
	}
	if fi == nil {
		var err error
		fi, err = os.Lstat(l.path(name))
		if err != nil {
			return true // gone already, or unreadable: the next scan retries
		}
	}
	e := &entry{state: settling, obs: observe(l.path(name), fi), lastChange: now, verified: now}
	e.checkAt = now.Add(l.w.opts.Settle)
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		// Nothing will make a symlink or fifo a valid frame; deliver it now
		// so the daemon can fail it with a reason. A folder settles first:
		// it may still be being copied in.
		e.stable = true
		l.nStable++
	}
	l.pending[name] = e
	l.nSettle++
	if l.nSettle > l.stats.PeakSettling {
		l.stats.PeakSettling = l.nSettle
	}
	l.due(e.checkAt)
	return true
}

func (l *loop) due(t time.Time) {
	if l.nextDue.IsZero() || t.Before(l.nextDue) {
		l.nextDue = t
	}
}

func (l *loop) drop(name string, e *entry) {
	if e.state == settling {
		l.nSettle--
		if e.stable {
			l.nStable--
		}
	}
	delete(l.pending, name)
}

// restat refreshes a settling entry; it reports false if the file is gone
// (the entry is dropped).
func (l *loop) restat(name string, e *entry, now time.Time) bool {
	fi, err := os.Lstat(l.path(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			l.drop(name, e)
			return false
		}
		// Transient stat trouble: look again after a settle period.
		e.checkAt = now.Add(l.w.opts.Settle)
		l.due(e.checkAt)
		return true
	}
	o := observe(l.path(name), fi)
	if o != e.obs {
		e.obs = o
		e.lastChange = now
		e.checkAt = now.Add(l.w.opts.Settle)
		if e.stable && settles(o.mode) {
			e.stable = false
			l.nStable--
		}
		l.due(e.checkAt)
	}
	e.verified = now
	return true
}

func (l *loop) event(ev fsnotify.Event, now time.Time) {
	if filepath.Dir(ev.Name) != l.w.inbox {
		return
	}
	name := filepath.Base(ev.Name)
	if Ignored(name) {
		return
	}
	appeared := ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write) || ev.Has(fsnotify.Chmod)
	e := l.pending[name]
	if e == nil {
		if appeared {
			l.admit(name, nil, now)
		}
		return
	}
	if e.state != settling {
		// Our own claim renames the file away (Rename): nothing to do.
		// Anything that writes the name again means a new file may be
		// there after Done.
		if appeared {
			e.dirty = true
		}
		return
	}
	// Every event on a settling file is a change; the stat tells whether
	// it still exists and records what it looks like now.
	if l.restat(name, e, now) {
		e.lastChange = now
		e.checkAt = now.Add(l.w.opts.Settle)
		if e.stable && settles(e.obs.mode) {
			e.stable = false
			l.nStable--
		}
		l.due(e.checkAt)
	}
}

// check stats the settling entries that are due and marks the stable ones.
func (l *loop) check(now time.Time) {
	settle := l.w.opts.Settle
	var next time.Time
	for name, e := range l.pending {
		if e.state != settling || e.stable {
			continue
		}
		if e.checkAt.After(now) {
			if next.IsZero() || e.checkAt.Before(next) {
				next = e.checkAt
			}
			continue
		}
		if !l.restat(name, e, now) {
			continue
		}
		if now.Sub(e.lastChange) >= settle {
			e.stable = true
			l.nStable++
			continue
		}
		if !e.checkAt.After(now) { // unchanged but not yet for a full settle period
			e.checkAt = e.lastChange.Add(settle)
		}
		if next.IsZero() || e.checkAt.Before(next) {
			next = e.checkAt
		}
	}
	l.nextDue = next
}

// promote moves stable entries into the queue, oldest mtime first, while
// there is room. An entry that waited longer than a settle period is stat'ed
// once more first, since no event may have told of a change (polling, NFS).
func (l *loop) promote(now time.Time) {
	room := l.w.opts.QueueSize - len(l.queue)
	if room <= 0 || l.nStable == 0 {
		return
	}
	type cand struct {
		name  string
		mtime int64
	}
	var cands []cand
	for name, e := range l.pending {
		if e.state == settling && e.stable {
			cands = append(cands, cand{name, e.obs.mtime})
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].mtime != cands[j].mtime {
			return cands[i].mtime < cands[j].mtime
		}
		return cands[i].name < cands[j].name
	})
	for _, c := range cands {
		if room == 0 {
			break
		}
		e := l.pending[c.name]
		if now.Sub(e.verified) > l.w.opts.Settle {
			if !l.restat(c.name, e, now) || !e.stable {
				continue
			}
		}
		e.stable = false
		l.nStable--
		l.nSettle--
		e.state = queued
		l.queue = append(l.queue, c.name)
		// Recorded before the name can be received, for Observed.
		l.w.judgedMu.Lock()
		l.w.judged[c.name] = e.obs
		l.w.judgedMu.Unlock()
		room--
	}
}

// done handles Done for a name.
func (l *loop) done(name string, now time.Time) {
	e := l.pending[name]
	if e == nil {
		return
	}
	if e.state == queued {
		for i, n := range l.queue {
			if n == name {
				l.queue = append(l.queue[:i], l.queue[i+1:]...)
				break
			}
		}
		l.w.judgedMu.Lock()
		delete(l.w.judged, name)
		l.w.judgedMu.Unlock()
	}
	dirty := e.dirty
	l.drop(name, e)
	if dirty {
		// A new file of the same name arrived while the old one was out;
		// observe it from now on (admit stats it; gone means nothing to do).
		l.admit(name, nil, now)
	}
}

// scan reads the inbox in batches and admits the oldest files that are not
// pending, as many as there are free places in the observation set; the rest
// are left for a later scan. Memory is O(free places), not O(folder).
func (l *loop) scan(now time.Time) {
	l.lastScan = now
	l.missed = false
	l.stats.Scans++
	d, err := os.Open(l.w.inbox)
	if err != nil {
		l.scanFailed(err)
		return
	}
	defer d.Close()
	free := l.w.opts.MaxSettling - l.nSettle
	h := &newestFirst{}
	failed := false
	for {
		batch, err := d.ReadDir(512)
		for _, de := range batch {
			name := de.Name()
			if Ignored(name) || l.pending[name] != nil {
				continue
			}
			if free <= 0 {
				l.missed = true
				continue
			}
			fi, err := os.Lstat(l.path(name))
			if err != nil {
				continue
			}
			heap.Push(h, scanned{name, fi})
			if h.Len() > free {
				heap.Pop(h) // keep the oldest `free` candidates
				l.missed = true
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			l.scanFailed(err)
			failed = true
			break
		}
	}
	if l.missed {
		l.stats.Missed++
	}
	if l.scanErr != nil && !failed {
		l.scanErr = nil
		l.w.log("info", "inbox is readable again", "dir", l.w.inbox)
	}
	for _, s := range *h {
		l.admit(s.name, s.fi, now)
	}
}

func (l *loop) scanFailed(err error) {
	if l.scanErr == nil {
		l.w.log("error", "cannot scan the inbox; no new file can be found until it can (retried every second)",
			"dir", l.w.inbox, "error", err.Error())
	}
	l.scanErr = err
}

// scanRetry is how soon a failed scan is tried again.
func (l *loop) scanRetry() time.Duration { return min(time.Second, l.w.opts.Rescan) }

func (l *loop) publish(w *Watcher) {
	l.stats.Settling = l.nSettle
	l.stats.Queued = len(l.queue)
	l.stats.Delivered = len(l.pending) - l.nSettle - len(l.queue)
	l.stats.ScanError = ""
	if l.scanErr != nil {
		l.stats.ScanError = l.scanErr.Error()
	}
	w.statsMu.Lock()
	w.stats = l.stats
	w.statsMu.Unlock()
}

// scanned is a scan candidate; newestFirst is a max-heap on mtime, so its
// top is the candidate to drop when there are more than free places.
type scanned struct {
	name string
	fi   fs.FileInfo
}

type newestFirst []scanned

func (h newestFirst) Len() int { return len(h) }
func (h newestFirst) Less(i, j int) bool {
	ti, tj := h[i].fi.ModTime(), h[j].fi.ModTime()
	if !ti.Equal(tj) {
		return ti.After(tj)
	}
	return h[i].name > h[j].name
}
func (h newestFirst) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *newestFirst) Push(x any)   { *h = append(*h, x.(scanned)) }
func (h *newestFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
