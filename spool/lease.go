package spool

// Several daemons on one spool (issue 15). Each daemon is an instance with
// an id (Options.Instance) and owns work/<id>/: it claims into it by
// rename, so of two daemons racing for one inbox file exactly one rename
// wins. Its liveness is leases/<id>, a file it holds an exclusive flock on
// for as long as it runs and whose mtime it refreshes (Heartbeat) every
// Lease/3. Sweep takes over the work/<id>/ of an instance whose lease
// expired:
//
//   - expired: the lease file's mtime is older than its lease + LeaseMargin
//     (its lease: the longer of this daemon's Lease and the lease_seconds
//     its owner wrote in it; daemons may be configured differently),
//     measured against this daemon's own lease mtime just refreshed, so
//     both times come from the same clock (the file server's, on NFS,
//     where touching a file with "now" asks the server for its time);
//     LeaseMargin absorbs what remains (hosts whose file system stamps
//     client clocks, coarse timestamps, a heartbeat delayed by a slow
//     disk);
//   - and not locked: the sweeper must get the flock on the file that is
//     at leases/<id> (checked again, with the expiry, under the names lock
//     right before the rename), which a running daemon holds, so a live
//     but late instance is never taken over where locks work (local file
//     systems; NFS without nolock). Holding it also keeps that instance
//     from starting while its frames move. A missing lease is replaced by
//     an empty one and judged from then on (takeOver), never by the
//     folder's mtime;
//   - then work/<id>/ is renamed in one step into the sweeper's own
//     work/<me>/.hidiffd-takeover-<id>-XXXX/: of two sweepers exactly one
//     rename succeeds, and the frames never sit where two daemons may work
//     on them. Their ctimes do not change (only the folder moves), so a
//     frame whose output is already complete in out/ is finished rather
//     than run again, as at Recover; the others go back to inbox/.
//
// Choosing a frame's name (Claim, Fail) looks at every work/ folder of
// every instance and is serialised across daemons by a short flock on
// ROOT/.hidiffd.names.lock, so two frames never take one name and nothing
// in out/ is ever replaced. The old whole-spool lock file .hidiffd.lock is
// kept and held shared: a daemon of a version before instances holds it
// exclusively, so old and new never run on one spool together.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// Leases is the folder of lease files, one per instance.
	Leases = "leases"
	// namesLockName serialises name choices across daemons.
	namesLockName = ".hidiffd.names.lock"
	// takeoverPrefix names a dead instance's work folder once a sweeper
	// took it into its own work/<id>/.
	takeoverPrefix = ".hidiffd-takeover-"

	// DefaultLease and DefaultLeaseMargin apply when Options leave them 0.
	DefaultLease       = 30 * time.Second
	DefaultLeaseMargin = 15 * time.Second
)

// instanceRE is a safe folder name: no dot first (temporary and takeover
// names start with one), no separators, short enough for takeover names.
var instanceRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)

// ValidInstance checks an instance id: 1-64 bytes of letters, digits, '.',
// '_' and '-', not starting with '.' or '-'.
func ValidInstance(id string) error {
	if !instanceRE.MatchString(id) {
		return fmt.Errorf("instance id %q is not a safe folder name: use 1-64 letters, digits, '.', '_' or '-', "+
			"not starting with '.' or '-'", id)
	}
	return nil
}

// ExpandInstance replaces "%h" in a configured instance id by this host's
// short name (up to the first dot, characters outside the safe set as '-'),
// so one configuration file shared by several hosts gives each its own id.
func ExpandInstance(pattern string) string {
	if !strings.Contains(pattern, "%h") {
		return pattern
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	host, _, _ = strings.Cut(host, ".")
	host = strings.Map(func(r rune) rune {
		if r < 128 && (r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return '-'
	}, host)
	return strings.ReplaceAll(pattern, "%h", host)
}

// leaseRecord is the content of leases/<id>, for people reading the spool;
// liveness is the file's mtime and flock, never this content.
type leaseRecord struct {
	Instance string `json:"instance"`
	Host     string `json:"host"`
	PID      int    `json:"pid"`
	Started  string `json:"started"`
	LeaseS   int64  `json:"lease_seconds"`
}

// takeLease opens leases/<id>, takes its exclusive flock (a second
// daemon with the same id is refused) and writes the record. A sweeper
// holds the flock of an expired lease for as long as it takes this id's
// frames over (a large folder may take longer than a lease), and unlinks
// the file then; so while the locked file is out of date, or no longer the
// one at the path, this waits for the sweeper (logging once) and opens the
// path again. Only a lease that is locked AND fresh is a running daemon.
func (s *Spool) takeLease() error {
	p := filepath.Join(s.dirs[Leases], s.id)
	waiting := false
	// A takeover in progress holds the lock for the time it takes to move
	// the folder; one that holds it longer than a whole lease and its
	// margin is not a takeover but a process that hangs with this
	// instance's lease locked: say so rather than wait for ever (a start
	// would hang until systemd kills it, a stop behind the heartbeat too).
	giveUp := time.Now().Add(s.opts.Lease + s.opts.LeaseMargin)
	for {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, fileMode)
		if err != nil {
			return fmt.Errorf("spool: lease %s: %w", p, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			// Read through f, just opened (fresh attributes on NFS).
			fi, serr := f.Stat()
			moved := !samePath(f, p)
			f.Close()
			if moved || (serr == nil && time.Since(fi.ModTime()) > s.opts.Lease) {
				if !waiting {
					waiting = true
					s.log("warn", "this instance is being taken over by another daemon; retrying until it is done",
						"instance", s.id, "lease", p)
				}
				if time.Now().After(giveUp) {
					return fmt.Errorf("spool: instance %q: lease %s has stayed locked without a heartbeat for over "+
						"spool.lease + spool.lease_margin (%s): another process with this spool.instance hangs "+
						"(find it in the lease file's host and pid), or a takeover is stuck", s.id, p,
						s.opts.Lease+s.opts.LeaseMargin)
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("spool: instance %q is in use by another process (lease %s locked and fresh): "+
				"give each daemon on this spool its own spool.instance", s.id, p)
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("spool: lock lease %s: %w", p, err)
		}
		if !samePath(f, p) {
			f.Close() // unlinked by a sweeper between open and lock
			continue
		}
		host, _ := os.Hostname()
		rec, _ := json.Marshal(leaseRecord{Instance: s.id, Host: host, PID: os.Getpid(),
			Started: time.Now().UTC().Format(time.RFC3339), LeaseS: int64(s.opts.Lease / time.Second)})
		// In place, not by rename: the flock belongs to this inode. Not
		// fsynced: the content is for people and for the others' limit
		// (leaseLimit); liveness is the mtime and the lock.
		err = f.Truncate(0)
		if err == nil {
			_, err = f.WriteAt(append(rec, '\n'), 0)
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("spool: write lease %s: %w", p, err)
		}
		s.lease = f
		return nil
	}
}

// samePath reports whether the open file is still the file at path. An
// unlinked file (no links left) is not. Opening the folder first makes an
// NFS client revalidate its cached names in it (close-to-open on the
// folder), so the stat does not answer from a lookup cached before the
// file was removed and made again by another host. The lease file itself
// is not opened: on NFS, closing any descriptor of it would drop this
// process's lock on it.
func samePath(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || a.Nlink == 0 {
		return false
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Close()
	}
	if unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// touchOwn sets this instance's lease file's times to "now" as the file
// system sees it (on NFS the server's clock: a time-less SETATTR, whose
// reply refreshes the cached attributes) and returns the mtime it got. It
// goes through the locked descriptor (its /proc/self/fd link, which names
// the open file even once it is unlinked; utimensat has no "this fd" form
// in Go) and never opens the file again: on NFS flock is a POSIX lock,
// which closing any descriptor of the file in this process would drop. So
// a lease removed from leases/ (taken over, or by hand) is still touched
// without error; Heartbeat notices that it is no longer the file at the
// path.
func (s *Spool) touchOwn() (time.Time, error) {
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	fdPath := "/proc/self/fd/" + strconv.Itoa(int(s.lease.Fd()))
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, fdPath, ts, 0); err != nil {
		return time.Time{}, fmt.Errorf("set times of %s through %s: %w", s.lease.Name(), fdPath, err)
	}
	fi, err := s.lease.Stat()
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// checkClock measures the offset between this host's clock and the mtimes
// the spool's file system stamps (touching the lease) and refuses an offset
// larger than the lease margin: leases compare such mtimes, and a file
// server or host whose clock is that far off is broken beyond what the
// margin covers. Returns the offset (file system minus host).
func (s *Spool) checkClock() (time.Duration, error) {
	p := filepath.Join(s.dirs[Leases], s.id)
	before := time.Now()
	m, err := s.touchOwn()
	if err != nil {
		return 0, fmt.Errorf("spool: heartbeat lease %s: %w", p, err)
	}
	after := time.Now()
	// Within [before, after] there is no measurable skew; outside, the
	// distance to the nearer end. Filesystems with coarse timestamps
	// (1-2 s) show up here as a small offset below the margin.
	var skew time.Duration
	switch {
	case m.Before(before.Add(-10 * time.Millisecond)):
		skew = m.Sub(before)
	case m.After(after.Add(10 * time.Millisecond)):
		skew = m.Sub(after)
	}
	if skew > s.opts.LeaseMargin || -skew > s.opts.LeaseMargin {
		return skew, fmt.Errorf("spool: clocks disagree: %s got mtime %s while this host's clock read %s (offset %v); "+
			"leases need the file server and every host within spool.lease_margin (%v) of each other: fix time sync (NTP)",
			p, m.UTC().Format(time.RFC3339Nano), before.UTC().Format(time.RFC3339Nano), skew.Round(time.Millisecond), s.opts.LeaseMargin)
	}
	return skew, nil
}

// checkRename proves what the spool relies on: a rename from inbox/ into
// this instance's work folder (RENAME_NOREPLACE or its fallback) moves the
// file and only moves it.
func (s *Spool) checkRename() error {
	name := probePrefix + "rename-" + randHex()
	src, dst := filepath.Join(s.dirs[Inbox], name), filepath.Join(s.dirs[Work], name)
	if err := os.WriteFile(src, []byte("probe"), fileMode); err != nil {
		return fmt.Errorf("spool: rename check: create %s: %w", src, err)
	}
	defer os.Remove(src)
	defer os.Remove(dst)
	if err := s.renameNoReplace(src, dst); err != nil {
		return fmt.Errorf("spool: rename check: %s -> %s: %w", src, dst, err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: rename check: %s still there after renaming it to %s (%v): "+
			"this file system does not rename atomically", src, dst, err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "probe" {
		return fmt.Errorf("spool: rename check: %s does not hold what was renamed there (%v)", dst, err)
	}
	return nil
}

// Instance is this daemon's instance id.
func (s *Spool) Instance() string { return s.id }

// ClockSkew is the offset measured at Open between this host's clock and
// the spool's file mtimes (0 without Options.Lock).
func (s *Spool) ClockSkew() time.Duration { return s.skew }

// Heartbeat refreshes this instance's lease (every Lease/3; the daemon's
// heartbeat loop calls it). If a sweeper took this instance over (it
// stalled past its lease, or its lease file was removed by hand) the
// locked lease is no longer the file at leases/<id>: Heartbeat takes the
// lease again (waiting for a sweeper still moving the frames) and
// recreates work/<id>/, so the daemon claims frames again instead of
// running on with every claim gone. It returns an error naming the
// instance whenever that happened: the frames it was working on are gone
// from work/ (their moves report ErrGone) because another daemon
// re-queued them.
func (s *Spool) Heartbeat() error {
	if s.lease == nil {
		return nil
	}
	p := filepath.Join(s.dirs[Leases], s.id)
	var errs []error
	if _, err := s.touchOwn(); err != nil {
		errs = append(errs, fmt.Errorf("spool: heartbeat lease %s: %w", p, err))
	}
	if !samePath(s.lease, p) {
		old := s.lease
		if err := s.takeLease(); err != nil {
			// Without the lease, claims stop (work/<id>/ is not made
			// again): frames claimed into a folder no lease protects would
			// be taken over once more, from a live daemon. The next
			// heartbeat tries again.
			return errors.Join(append(errs, fmt.Errorf("spool: instance %q lost its lease %s (taken over by another daemon, or removed) "+
				"and could not take it again; claims stop until it does: %w", s.id, p, err))...)
		} else {
			old.Close() // after the new lock: a different file, so on NFS its POSIX lock stays
			errs = append(errs, fmt.Errorf("spool: instance %q lost its lease %s (taken over by another daemon, or removed); "+
				"took it again", s.id, p))
		}
	}
	if _, err := os.Lstat(s.dirs[Work]); errors.Is(err, fs.ErrNotExist) {
		if merr := os.Mkdir(s.dirs[Work], dirMode); merr != nil && !errors.Is(merr, fs.ErrExist) {
			errs = append(errs, fmt.Errorf("spool: recreate %s: %w", s.dirs[Work], merr))
		} else {
			_ = syncDir(s.workRoot)
		}
		errs = append(errs, fmt.Errorf("spool: work/%s/ was taken over by another daemon (instance %q missed its lease of %v, "+
			"or its lease was removed): its frames went back to inbox/; recreated it", s.id, s.id, s.opts.Lease))
	}
	return errors.Join(errs...)
}

// retryTakeovers recovers again what an earlier takeover by this instance
// could not move (a takeover folder left in work/<id>/ after an error), at
// every sweep rather than only at the next start: an unattended daemon may
// run for weeks. Its result counts under this instance's own id.
func (s *Spool) retryTakeovers() (Takeover, error) {
	t := Takeover{Instance: s.id}
	ents, err := os.ReadDir(s.dirs[Work])
	if err != nil {
		return t, fmt.Errorf("spool: sweep: read work/%s/: %w", s.id, err)
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), takeoverPrefix) {
			continue
		}
		s.lockNames()
		r, f := s.recoverDirLocked(filepath.Join(s.dirs[Work], e.Name()), &errs)
		s.unlockNames()
		t.Requeued, t.Finished = t.Requeued+r, t.Finished+f
	}
	return t, errors.Join(errs...)
}

// Takeover is one dead instance's work taken over by Sweep.
type Takeover struct {
	Instance string
	// Age is how long its lease had not been refreshed.
	Age      time.Duration
	Requeued int // frames put back in inbox/
	Finished int // frames whose output was complete: moved to done/
}

// Sweep takes over the work/<id>/ of every other instance whose lease
// expired (see the top of this file). Live instances are never touched.
// It runs at start after Recover and then with every heartbeat, from one
// goroutine.
func (s *Spool) Sweep() ([]Takeover, error) {
	ents, err := os.ReadDir(s.workRoot)
	if err != nil {
		return nil, fmt.Errorf("spool: sweep: read work/: %w", err)
	}
	var now time.Time
	if s.lease != nil {
		// Our own lease, just touched: "now" on the clock the other
		// leases were stamped with.
		if now, err = s.touchOwn(); err != nil {
			return nil, fmt.Errorf("spool: sweep: heartbeat: %w", err)
		}
	} else {
		now = time.Now()
	}
	var out []Takeover
	var errs []error
	// What a dead instance was writing in out/ and failed/ is removed once
	// it is stale, a lease after its takeover.
	if due := s.tempsDue.Load(); due != 0 && time.Now().UnixNano() > due {
		s.tempsDue.Store(0)
		if err := s.removeStaleTemps(); err != nil {
			errs = append(errs, fmt.Errorf("spool: sweep: temporary files: %w", err))
		}
	}
	for _, e := range ents {
		id := e.Name()
		if !e.IsDir() || id == s.id || ValidInstance(id) != nil {
			continue
		}
		t, ok, terr := s.takeOver(id, now)
		if terr != nil {
			errs = append(errs, terr)
		}
		if ok {
			out = append(out, t)
			s.tempsDueLater()
		}
	}
	if t, err := s.retryTakeovers(); err != nil || t.Requeued+t.Finished > 0 {
		out = append(out, t)
		errs = append(errs, err)
	}
	// Lease files of instances that left no work folder and stopped long
	// ago: nothing to take over, only the file to tidy.
	if lents, lerr := os.ReadDir(s.dirs[Leases]); lerr == nil {
		for _, e := range lents {
			id := e.Name()
			if id == s.id || ValidInstance(id) != nil {
				continue
			}
			if _, serr := os.Lstat(filepath.Join(s.workRoot, id)); errors.Is(serr, fs.ErrNotExist) {
				if _, ok, terr := s.takeOver(id, now); terr != nil {
					errs = append(errs, terr)
				} else if ok {
					s.log("debug", "removed the lease of a stopped instance", "instance", id)
				}
			}
		}
	}
	return out, errors.Join(errs...)
}

// leaseLimit is how old a lease whose file holds rec may get before its
// instance is taken over: the longer of this daemon's spool.lease and the
// lease_seconds its owner wrote (daemons on one spool may be configured
// with different leases; one with a longer lease heartbeats less often),
// plus this daemon's margin. An unreadable record counts as this daemon's
// lease.
func (s *Spool) leaseLimit(rec []byte) time.Duration {
	lease := s.opts.Lease
	var r leaseRecord
	if json.Unmarshal(rec, &r) == nil && r.LeaseS > 0 {
		if d := time.Duration(r.LeaseS) * time.Second; d > lease {
			lease = d
		}
	}
	return lease + s.opts.LeaseMargin
}

// readLease reads a lease file through f: its mtime and its limit
// (leaseLimit). Through the descriptor, so that a locked lease is never
// opened and closed again (which would drop the lock on NFS).
func (s *Spool) readLease(f *os.File) (time.Time, time.Duration, error) {
	fi, err := f.Stat()
	if err != nil {
		return time.Time{}, 0, err
	}
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	return fi.ModTime(), s.leaseLimit(buf[:n]), nil
}

// takeOver takes over instance id if its lease expired. ok reports that it
// did (or that there was nothing left but its lease file, now removed).
//
// work/<id>/ is renamed only while this daemon holds the flock of the file
// that is at leases/<id> at that moment, checked again under the names
// lock: the instance itself cannot be running (it would hold that lock),
// nor restarting (it waits for it in takeLease, and makes work/<id>/ only
// once it has it), and no other sweeper is at it. A lease that is missing
// (removed by hand, or a sweeper stopped between moving the folder and
// removing the lease) is not judged by the folder's mtime: an idle live
// daemon's folder is old too. Instead an empty lease file is created in its
// place and the instance judged by it from then on: a live daemon takes
// that file at its next heartbeat (Heartbeat), a dead one is taken over a
// lease and its margin later.
func (s *Spool) takeOver(id string, now time.Time) (Takeover, bool, error) {
	t := Takeover{Instance: id}
	lp := filepath.Join(s.dirs[Leases], id)
	wdir := filepath.Join(s.workRoot, id)
	// Opening revalidates the cached attributes on NFS (close-to-open), so
	// a live lease's mtime is never read stale. Not locked yet: closing is
	// harmless.
	lf, err := os.OpenFile(lp, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if _, werr := os.Lstat(wdir); werr != nil {
			return t, false, nil // nothing here (gone meanwhile)
		}
		f, cerr := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
		switch {
		case cerr == nil:
			f.Close()
			_ = syncDir(s.dirs[Leases])
			s.log("warn", "instance has a work folder but no lease: created an empty one; "+
				"the instance is taken over if nothing refreshes it within its lease and margin", "instance", id, "lease", lp)
		case !errors.Is(cerr, fs.ErrExist):
			return t, false, fmt.Errorf("spool: sweep: create missing lease %s: %w", lp, cerr)
		}
		return t, false, nil
	}
	if err != nil {
		return t, false, fmt.Errorf("spool: sweep: open lease %s: %w", lp, err)
	}
	defer lf.Close()
	m, limit, err := s.readLease(lf)
	if err != nil {
		return t, false, fmt.Errorf("spool: sweep: lease %s: %w", lp, err)
	}
	t.Age = now.Sub(m)
	if t.Age <= limit {
		return t, false, nil
	}
	// Expired by the clock. A running daemon still holds the flock
	// (stalled, or a clock gone wrong): leave it alone. Holding the lock
	// keeps the instance from restarting until its frames have moved.
	switch ok, lerr := s.lockExpired(lf, lp, now); {
	case lerr != nil:
		return t, false, lerr
	case !ok:
		return t, false, nil
	}

	if s.beforeNames != nil {
		s.beforeNames() // tests: what other daemons do meanwhile
	}
	s.lockNames()
	defer s.unlockNames()
	// Again under the names lock, right before the rename: still the file
	// at the path (nobody removed or replaced it while we waited for the
	// names lock) and still expired.
	if ok, _ := s.stillExpired(lf, lp, now); !ok {
		return t, false, nil
	}
	moved := filepath.Join(s.dirs[Work], takeoverPrefix+id+"-"+randHex())
	switch err := s.renameNoReplace(wdir, moved); {
	case errors.Is(err, fs.ErrNotExist):
		// No work folder, or another sweeper won the rename.
	case err != nil:
		return t, false, fmt.Errorf("spool: take over work/%s/: %w", id, err)
	default:
		if serr := syncDir(s.dirs[Work]); serr != nil {
			return t, false, fmt.Errorf("spool: take over work/%s/: fsync: %w", id, serr)
		}
		if serr := syncDir(s.workRoot); serr != nil {
			return t, false, fmt.Errorf("spool: take over work/%s/: fsync work/: %w", id, serr)
		}
		var errs []error
		t.Requeued, t.Finished = s.recoverDirLocked(moved, &errs)
		if len(errs) > 0 {
			// What could not move stays in our work folder: recovered at
			// our next start, or taken over with it.
			return t, true, errors.Join(errs...)
		}
	}
	if err := os.Remove(lp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return t, true, fmt.Errorf("spool: remove lease %s: %w", lp, err)
	}
	_ = syncDir(s.dirs[Leases])
	return t, true, nil // the caller logs it
}

// serverNow is this host's clock corrected by the offset to the file
// system's measured at Open: "now" for comparing with ctimes.
func (s *Spool) serverNow() time.Time { return time.Now().Add(s.skew) }

// othersAlive reports whether another instance may be running: a lease
// file of another id that is fresh or whose lock is held.
func (s *Spool) othersAlive() bool {
	// What cannot be read counts as alive: the cost of that mistake is
	// leftovers kept until a later sweep, the other one's deleting a
	// living daemon's half-written output.
	ents, err := os.ReadDir(s.dirs[Leases])
	if err != nil {
		s.log("warn", "cannot list the leases; counting other daemons as alive", "dir", s.dirs[Leases], "error", err.Error())
		return true
	}
	now := s.serverNow()
	for _, e := range ents {
		id := e.Name()
		if id == s.id || ValidInstance(id) != nil {
			continue
		}
		p := filepath.Join(s.dirs[Leases], id)
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // taken over and removed since the listing
		}
		if err != nil {
			s.log("warn", "cannot read a lease; counting its daemon as alive", "lease", p, "error", err.Error())
			return true
		}
		if m, limit, err := s.readLease(f); err == nil && now.Sub(m) <= limit {
			f.Close()
			return true
		}
		locked := errors.Is(unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
		f.Close() // drops the shared lock if it was taken
		if locked {
			return true
		}
	}
	return false
}

// staleTemp reports whether a temporary or probe file has not been
// touched for a lease and its margin: by ctime, which writing, renaming
// and setting the times (output.keep_mtime) all move forward, so a file
// another daemon is still writing is never taken for a leftover.
func (s *Spool) staleTemp(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return s.serverNow().Sub(time.Unix(st.Ctim.Unix())) > s.opts.Lease+s.opts.LeaseMargin
}

// tempsDueLater has Sweep look for stale temporary files once the ones
// there now are stale: after a takeover, or a Recover that left fresh ones
// because other daemons run.
func (s *Spool) tempsDueLater() {
	s.tempsDue.Store(time.Now().Add(s.opts.Lease + s.opts.LeaseMargin + time.Second).UnixNano())
}

// stateRoot is the folder of a state as the whole spool sees it: for work/
// the root holding every instance's folder, not this instance's own.
func (s *Spool) stateRoot(state string) string {
	if state == Work {
		return s.workRoot
	}
	return s.dirs[state]
}

// isLeftover reports whether a name in a state folder is a temporary file
// (an output or record being written) or a probe of Open's checks: what a
// crash leaves behind, never a frame.
func isLeftover(name string) bool {
	return IsTempName(name) || strings.HasPrefix(name, probePrefix)
}

// removeStaleTemps deletes temporary and probe files in the state folders
// that no one has touched for a lease and its margin: what a dead or
// restarted instance was writing when it stopped.
func (s *Spool) removeStaleTemps() error {
	var errs []error
	for _, state := range States {
		dir := s.stateRoot(state)
		ents, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed := false
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if !isLeftover(e.Name()) || !s.staleTemp(p) {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
			removed = true
			s.log("info", "removed a temporary file left by a stopped instance", "folder", state, "name", e.Name())
		}
		if removed {
			_ = syncDir(dir)
		}
	}
	return errors.Join(errs...)
}

// lockExpired takes the lock of lf, a lease file opened at lp whose mtime
// looked expired, and reports whether the takeover may go on: the lock was
// free (no daemon holds it) and stillExpired. The lock stays with lf.
func (s *Spool) lockExpired(lf *os.File, lp string, now time.Time) (bool, error) {
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			var st unix.Stat_t
			if unix.Fstat(int(lf.Fd()), &st) == nil {
				if _, seen := s.heldWarned.LoadOrStore(st.Ino, true); seen {
					return false, nil
				}
			}
			buf := make([]byte, 4096)
			n, _ := lf.ReadAt(buf, 0)
			var rec leaseRecord
			_ = json.Unmarshal(buf[:n], &rec)
			s.log("warn", "instance's lease is out of date but its lock is held, so its frames are not taken over: "+
				"a live daemon missing its heartbeats, another daemon taking it over right now, or, on NFS, a dead "+
				"host whose lock the file server still keeps (NFSv4: until the server's lease ends, about 90 s; "+
				"NFSv3: until that host's lock manager restarts)",
				"lease", lp, "host", rec.Host, "pid", rec.PID)
			return false, nil
		}
		return false, fmt.Errorf("spool: sweep: lock lease %s: %w", lp, err)
	}
	return s.stillExpired(lf, lp, now)
}

// stillExpired reports whether lf, locked, is still the file at lp and
// still expired. Another sweeper may have taken the instance over and
// removed the file since we opened it, and the instance may be starting
// again with a new lease (and work folder) that must not be touched; or it
// was refreshed meanwhile (alive). Read through lf: opening the file again
// and closing that would drop the lock on NFS.
func (s *Spool) stillExpired(lf *os.File, lp string, now time.Time) (bool, error) {
	if !samePath(lf, lp) {
		return false, nil
	}
	m, limit, err := s.readLease(lf)
	if err != nil {
		return false, err
	}
	return now.Sub(m) > limit, nil
}

// lockNames serialises name choices: s.mu among this process's workers,
// the names flock among daemons. flock is per open file description, so
// the mutex comes first.
func (s *Spool) lockNames() {
	s.mu.Lock()
	if s.names != nil {
		err := s.flockNames()
		// Any other error (ENOLCK: NFS without a lock manager) leaves only
		// the in-process mutex, which the never-replacing renames back up
		// against other daemons; worth saying once.
		if err != nil {
			s.namesWarn.Do(func() {
				s.log("warn", "cannot lock the names lock file: daemons sharing this spool may choose the same name for two "+
					"frames at once (the never-replacing renames still keep any file from being replaced); "+
					"mount the spool with working locks", "path", s.names.Name(), "error", err.Error())
			})
		}
	}
}

// flockNames takes the names flock, polling rather than blocking so that
// a wait no holder should cause (a daemon that hangs or is stalled on the
// file server with the lock: held for milliseconds otherwise) is logged,
// once per wait after a lease, naming the lock file; the wait itself goes
// on, since choosing a name without the lock could give two frames one.
func (s *Spool) flockNames() error {
	fd := int(s.names.Fd())
	start, warned := time.Now(), false
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == unix.EINTR {
			continue
		}
		if err != unix.EWOULDBLOCK {
			if warned {
				s.log("info", "names lock taken after a long wait", "path", s.names.Name(), "waited", time.Since(start).String())
			}
			return err
		}
		if !warned && time.Since(start) > s.opts.Lease {
			warned = true
			s.log("warn", "waiting for the names lock for longer than a lease: a daemon on this spool holds it "+
				"and does not let go (hung, or stalled on the file server); claims and moves wait",
				"path", s.names.Name(), "lease", s.opts.Lease.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Spool) unlockNames() {
	if s.names != nil {
		_ = unix.Flock(int(s.names.Fd()), unix.LOCK_UN)
	}
	s.mu.Unlock()
}

// frameDirsLocked lists every folder a claimed frame can be in: work/
// itself (frames of a version before instances), each work/<id>/, and
// takeover folders inside them. Names lock held.
func (s *Spool) frameDirsLocked() []string {
	dirs := []string{s.workRoot}
	for i := 0; i < len(dirs); i++ {
		ents, err := os.ReadDir(dirs[i])
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if !e.IsDir() {
				continue
			}
			if (i == 0 && ValidInstance(n) == nil) || strings.HasPrefix(n, takeoverPrefix) {
				dirs = append(dirs, filepath.Join(dirs[i], n))
			}
		}
	}
	return dirs
}
