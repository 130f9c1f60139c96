// Package spool is the on-disk state machine of hidiffd, shaped like Postfix's
// queue: a frame lives in exactly one of five folders under one root and moves
// between them only by rename(2) on one filesystem, so a crash (SIGKILL, power
// loss after the fsyncs) at any moment leaves every frame in exactly one state.
//
//	inbox/  --Claim-->  work/<id>/  --Finish-->  done/ (or unlinked)
//	                      |---Fail----->  failed/NAME + failed/NAME.error.json
//	                      '---Release-->  inbox/  (shutdown, transient errors)
//	outputs: out/.NAME.hidiffd-tmp-XXXX  --fsync, rename-->  out/NAME
//
// Names: a frame gets its name for the rest of its way when it is claimed.
// It keeps the name it arrived with unless that name is taken in work/,
// out/, done/ or failed/ (a camera that restarts its numbering, the same
// name dropped while the first is still in work/); then it takes the first
// free "stem.N.ext" (N = 1, 2, ...; the number goes before the extension so
// the format stays recognisable), e.g. frame.1.jpg. Its output is
// out/frame.1.jpg, its original done/frame.1.jpg, or failed/frame.1.jpg
// with failed/frame.1.jpg.error.json (whose "name" is the name it arrived
// with). So an output never replaces another frame's output, and the
// original <-> output pairing is the file name. Names longer than 244 bytes
// are shortened at the claim (the extension kept) so that NAME.error.json
// fits NAME_MAX. Every move uses renameat2(RENAME_NOREPLACE): a name taken
// by something outside the daemon is never overwritten either (the frame
// then takes the next free name there, which is logged).
//
// work/<id>/ is the work folder of one daemon instance; several daemons
// share one spool, each claiming into its own, and take over the folder of
// one whose lease expired (lease.go). "work/" below means that folder.
//
// A crash between publishing the output and moving the original leaves
// work/NAME beside out/NAME: Recover finishes such a frame (its output is
// complete: written, fsynced, then renamed) instead of re-queueing it, so
// a frame never gets two outputs.
package spool

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"hidiffd/internal/durable"
)

// The state folders under the spool root.
const (
	Inbox  = "inbox"
	Work   = "work"
	Out    = "out"
	Done   = "done"
	Failed = "failed"
)

// States lists the state folders in data-path order.
var States = []string{Inbox, Work, Out, Done, Failed}

const (
	dirMode  = 0o750
	fileMode = 0o640

	// tmpMarker is part of every temporary name the spool writes (outputs in
	// out/, error records in failed/; durable.Write names them). Temporary
	// names also start with a dot, so folder watchers that ignore dotfiles
	// never see them; Recover deletes them.
	tmpMarker = durable.TempMarker
	// probePrefix names the files Open creates to prove a folder writable.
	probePrefix = ".hidiffd-probe-"
	// ErrorSuffix is appended to a failed frame's name for its JSON record.
	ErrorSuffix = ".error.json"
	// lockName is the flock file in the root (Options.Lock).
	lockName = ".hidiffd.lock"
)

var (
	// ErrGone means the file is no longer where the operation expected it
	// (another claimer took it, or someone removed it). The caller forgets
	// the name; nothing is lost.
	ErrGone = errors.New("spool: file is gone")
	// ErrOutputExists is returned by WriteOutput when out/NAME exists
	// although the claim found the name free: something outside the daemon
	// put a file there. It is not replaced; the caller releases the frame,
	// whose next claim takes a free name.
	ErrOutputExists = errors.New("spool: out/ already holds a file of this name (not written by this frame); not replaced")
	// ErrNoOutput is returned by Finish for a job whose output was never
	// written: finishing it would drop the original without a result.
	ErrNoOutput = errors.New("spool: Finish before a successful WriteOutput")
	// ErrBadName is returned for names that are not a single path element.
	ErrBadName = errors.New("spool: invalid file name")
)

// Logger receives the spool's rare notable events (collisions, replaced
// outputs, cleanup at Recover). level is "debug", "info", "warn" or "error";
// kv are alternating keys and values. It matches watch.Logger.
type Logger = func(level, msg string, kv ...any)

// Options configure a Spool.
type Options struct {
	// KeepOriginals: true moves a finished original to done/; false deletes
	// it once its output is durable in out/.
	KeepOriginals bool
	// Instance is this daemon's id (see lease.go): its frames are claimed
	// into work/<Instance>/ and its lease is leases/<Instance>. Empty:
	// ExpandInstance("%h"), the host's short name.
	Instance string
	// Lock makes this daemon a lease holder: it takes the exclusive flock
	// on leases/<Instance> (a second daemon with the same id fails to
	// start), a shared flock on ROOT/.hidiffd.lock (which a daemon of a
	// version before instances holds exclusively), and checks the rename
	// and the clock offset to the file system. Released by Close or
	// process exit.
	Lock bool
	// Lease is how long a lease lasts without a heartbeat, LeaseMargin the
	// extra time others wait before taking an instance's work over (clock
	// skew, coarse timestamps). 0: DefaultLease, DefaultLeaseMargin.
	Lease, LeaseMargin time.Duration
	// Log, if set, receives notable events. nil discards them.
	Log Logger
}

// Spool is one spool root. Its methods are safe for concurrent use by several
// workers, provided each Job is handled by one goroutine at a time.
type Spool struct {
	root string
	opts Options
	dirs map[string]string
	lock *os.File

	id       string   // instance id
	workRoot string   // ROOT/work; dirs[Work] is ROOT/work/<id>
	names    *os.File // names flock (lockNames)
	lease    *os.File // leases/<id>, flocked (Options.Lock)
	skew     time.Duration
	tempsDue atomic.Int64 // unix ns after which Sweep removes stale temporary files (0: none due)
	// namesWarn logs once that the names flock does not work here.
	namesWarn sync.Once
	// heldWarned: lease files (by inode) already reported as out of date
	// but locked, so a sweep every lease/3 says it once per incident.
	heldWarned sync.Map
	// beforeNames, if set (tests only), runs in takeOver between locking
	// an expired lease and taking the names lock.
	beforeNames func()

	// mu serialises choosing a free name and renaming into it, so two
	// workers never pick the same suffixed name in done/, failed/ or inbox/;
	// the names flock (lockNames) does the same among daemons.
	mu sync.Mutex
	// noReplace does every rename (moves, outputs, sidecars): it never
	// replaces a file, and remembers a file system that lacks
	// RENAME_NOREPLACE (some network file systems).
	noReplace durable.NoReplace
}

// Job is a claimed frame: its original is at Path (work/NAME). Name is the
// frame's name in every state folder from the claim on; Arrived is the name
// it had in inbox/ (different when that name was taken or too long).
type Job struct {
	Name    string
	Arrived string
	Path    string
	// Output is the output's file name in out/, set by WriteOutput.
	Output string

	written bool     // WriteOutput succeeded; Finish may drop the original
	beside  []string // files WriteBeside published in out/ for this job
	// file is the claimed file's identity (device, inode): the frame is
	// this job's while work/NAME is that file. A name alone is not enough:
	// after a takeover this daemon may claim a newer frame of the same
	// name into the same place.
	file fileID
}

// fileID identifies a file on its file system; zero is unknown.
type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{uint64(st.Dev), uint64(st.Ino)}
	}
	return fileID{}
}

// stillMine reports whether j's frame is still at work/NAME: the file it
// claimed, not gone (taken over by another daemon while this one stalled
// past its lease) nor replaced by another frame of that name. Other
// errors are returned.
func (s *Spool) stillMine(j *Job) (bool, error) {
	fi, err := os.Lstat(filepath.Join(s.dirs[Work], j.Name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return j.file == (fileID{}) || idOf(fi) == j.file, nil
}

// errNotMine is the ErrGone of a job whose frame left work/ or was
// replaced there.
func errNotMine(j *Job) error {
	return fmt.Errorf("%w: work/%s is no longer the frame this job claimed (taken over by another daemon?)", ErrGone, j.Name)
}

// ErrorRecord is the content of failed/NAME.error.json.
type ErrorRecord struct {
	Name   string `json:"name"`           // the name the file arrived with
	File   string `json:"file,omitempty"` // its name in failed/, when a collision renamed it
	Reason string `json:"reason"`
	Stage  string `json:"stage"`
	Time   string `json:"time"` // RFC 3339 with nanoseconds, UTC
	Size   int64  `json:"size"` // bytes (for a symlink: the target's length)
	Type   string `json:"type,omitempty"`
}

// Open creates ROOT/{inbox,work,out,done,failed} (mode 0750) if needed and
// checks that all five are directories on one filesystem (renames between
// them must be atomic) and writable. Errors name the folder.
func Open(root string, opts Options) (*Spool, error) {
	if root == "" {
		return nil, errors.New("spool: empty root path")
	}
	root = filepath.Clean(root)
	if opts.Instance == "" {
		opts.Instance = ExpandInstance("%h")
	}
	if err := ValidInstance(opts.Instance); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.LeaseMargin <= 0 {
		opts.LeaseMargin = DefaultLeaseMargin
	}
	// Before anything is created: a spool inside another one's folders
	// would have its files claimed, moved or failed by the other daemon.
	if err := checkNotNested(root); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, dirMode); err != nil {
		return nil, fmt.Errorf("spool: create root %s: %w", root, err)
	}
	s := &Spool{root: root, opts: opts, dirs: make(map[string]string, len(States)+1), id: opts.Instance,
		workRoot: filepath.Join(root, Work)}
	s.noReplace.OnFallback = func(dir string) {
		s.log("warn", "filesystem lacks RENAME_NOREPLACE; using link and unlink (each atomic on the file server) instead", "dir", dir)
	}
	s.noReplace.OnNoLinks = func(dir string) {
		s.log("warn", "filesystem lacks hard links too; renames check that the name is free, then rename: "+
			"safe for one daemon, not for several daemons on this spool", "dir", dir)
	}
	if opts.Lock {
		if err := s.takeLock(); err != nil {
			return nil, err
		}
	}
	nl, err := os.OpenFile(filepath.Join(root, namesLockName), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("spool: lock file %s: %w", filepath.Join(root, namesLockName), err)
	}
	s.names = nl
	var dev uint64
	// work/ comes twice: the folder, then this instance's own work/<id>/
	// (after the lease is taken: a sweeper may be moving its old one).
	for i, state := range append(append([]string{}, States...), Leases, Work) {
		dir := filepath.Join(root, state)
		if i == len(States)+1 {
			if opts.Lock {
				if err := s.takeLease(); err != nil {
					s.Close()
					return nil, err
				}
			}
			dir = filepath.Join(root, Work, s.id)
		}
		if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			s.Close()
			return nil, fmt.Errorf("spool: create %s/ (%s): %w", state, dir, err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("spool: %s/ (%s): %w", state, dir, err)
		}
		if !fi.IsDir() {
			s.Close()
			return nil, fmt.Errorf("spool: %s/ (%s) is not a directory", state, dir)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			s.Close()
			return nil, fmt.Errorf("spool: %s/ (%s): no device number available", state, dir)
		}
		if i == 0 {
			dev = uint64(st.Dev)
		} else if uint64(st.Dev) != dev {
			s.Close()
			return nil, fmt.Errorf("spool: %s/ (%s) is on another filesystem than inbox/; "+
				"all state folders must share one filesystem so moves are atomic renames", state, dir)
		}
		if err := probeWritable(dir); err != nil {
			s.Close()
			return nil, fmt.Errorf("spool: %s/ (%s) is not writable: %w", state, dir, err)
		}
		s.dirs[state] = dir
	}
	if opts.Lock {
		if err := s.checkRename(); err != nil {
			s.Close()
			return nil, err
		}
		if s.skew, err = s.checkClock(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// checkNotNested refuses a root inside another spool (an ancestor folder
// holds a spool's lock file and its five folders) and a root whose state
// folders hold another spool one level down.
func checkNotNested(root string) error {
	abs, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("spool: %s: %w", root, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if isSpool(dir) {
			where, _ := filepath.Rel(dir, abs)
			return fmt.Errorf("spool: %s is inside the spool %s (at %s): another daemon's spool would take, move or fail "+
				"this one's files; choose a folder outside it", root, dir, where)
		}
		if parent := filepath.Dir(dir); parent == dir {
			break
		}
	}
	for _, state := range States {
		entries, err := os.ReadDir(filepath.Join(abs, state))
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() && isSpool(filepath.Join(abs, state, e.Name())) {
				return fmt.Errorf("spool: %s holds another spool in %s/%s: this daemon would take, move or fail its files; "+
					"move that spool out first", root, state, e.Name())
			}
		}
	}
	return nil
}

// isSpool reports whether dir is a spool root: the lock file and the five
// state folders.
func isSpool(dir string) bool {
	if _, err := os.Lstat(filepath.Join(dir, lockName)); err != nil {
		return false
	}
	for _, state := range States {
		if fi, err := os.Stat(filepath.Join(dir, state)); err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// probeWritable creates and removes a dotfile: access(2) would say yes to
// root on a read-only bind mount's neighbour and says nothing about quotas.
func probeWritable(dir string) error {
	p := filepath.Join(dir, probePrefix+strconv.Itoa(os.Getpid())+"-"+randHex())
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	f.Close()
	// ENOENT: another daemon's Recover took it for a leftover; the
	// folder was writable all the same.
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (s *Spool) takeLock() error {
	p := filepath.Join(s.root, lockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("spool: lock %s: %w", p, err)
	}
	// Shared: daemons with instances run side by side; a version before
	// them takes it exclusively and so never runs beside them.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("spool: %s is in use by a daemon of an older version that locks the whole spool (lock %s held); "+
				"stop it first: it would re-queue the frames of the daemons running here", s.root, p)
		}
		return fmt.Errorf("spool: lock %s: %w", p, err)
	}
	s.lock = f
	return nil
}

// Close releases the locks and the lease taken with Options.Lock (the lease
// file stays: its age tells the others when this instance stopped). Other
// methods keep working; a second Close is harmless.
func (s *Spool) Close() error {
	var errs []error
	for _, f := range []**os.File{&s.lease, &s.lock} {
		if *f != nil {
			errs = append(errs, (*f).Close()) // closing the descriptor drops the flock
			*f = nil
		}
	}
	return errors.Join(errs...)
}

// Root is the spool root folder.
func (s *Spool) Root() string { return s.root }

// IsTempName reports whether a file name is one of the spool's temporary
// names (a leftover of a crash while writing an output or error record).
func IsTempName(name string) bool { return durable.IsTemp(name) }

// Recover runs once at start, before any worker: it moves every frame of
// this instance's work/<id>/ back to inbox/ (a crash left them
// half-processed; their outputs, if any, are rewritten), and so every frame
// left in work/ itself by a version before instances, and every frame in a
// takeover folder this instance was emptying when it stopped. A frame whose
// output is already complete in out/ is finished instead. It deletes
// temporary files left in out/ and failed/ and probe files, and removes
// error records in failed/ whose frame never arrived there (a crash between
// writing the record and moving the frame; the frame was in work/ and is
// re-queued now). Other instances' work/<id>/ are left to Sweep. It fsyncs
// the folders it changed.
func (s *Spool) Recover() (requeued int, err error) {
	s.lockNames()
	defer s.unlockNames()
	finished := 0
	var errs []error
	changed := map[string]bool{}
	// Alone on the spool, every temporary file is a leftover of a crash;
	// with other daemons running, only one no one has touched for a lease
	// (the others' outputs are being written).
	stale := func(string) bool { return true }
	if s.othersAlive() {
		stale = s.staleTemp
	}
	for _, state := range States {
		dir := s.stateRoot(state)
		entries, rerr := os.ReadDir(dir)
		if rerr != nil {
			errs = append(errs, fmt.Errorf("spool: recover: read %s/: %w", state, rerr))
			continue
		}
		for _, e := range entries {
			name := e.Name()
			switch {
			case isLeftover(name):
				if !stale(filepath.Join(dir, name)) {
					s.tempsDueLater()
					continue
				}
				if rerr := os.Remove(filepath.Join(dir, name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					errs = append(errs, fmt.Errorf("spool: recover: remove %s/%s: %w", state, name, rerr))
					continue
				}
				s.log("info", "removed leftover temporary file", "folder", state, "name", name)
				changed[state] = true
			case state == Work && e.IsDir() && ValidInstance(name) == nil:
				// An instance's folder: ours below, the others' are Sweep's.
			case state == Work:
				// Left in work/ itself by a version before instances.
				r, f := s.recoverFrameLocked(dir, name, &errs)
				requeued, finished = requeued+r, finished+f
			case state == Failed && strings.HasSuffix(name, ErrorSuffix):
				frame := strings.TrimSuffix(name, ErrorSuffix)
				if _, serr := os.Lstat(filepath.Join(dir, frame)); errors.Is(serr, fs.ErrNotExist) {
					if rerr := os.Remove(filepath.Join(dir, name)); rerr == nil {
						s.log("info", "removed orphan error record", "name", name)
						changed[Failed] = true
					}
				}
			}
		}
	}
	r, f := s.recoverDirLocked(s.dirs[Work], &errs)
	requeued, finished = requeued+r, finished+f
	for _, state := range States {
		if changed[state] {
			dir := s.stateRoot(state) // for work/, the root was changed, not work/<id>/
			if serr := syncDir(dir); serr != nil {
				errs = append(errs, fmt.Errorf("spool: recover: fsync %s/: %w", state, serr))
			}
		}
	}
	if requeued > 0 {
		s.log("info", "re-queued interrupted frames", "count", requeued)
	}
	if finished > 0 {
		s.log("info", "finished interrupted frames whose output was already complete in out/", "count", finished)
	}
	return requeued, errors.Join(errs...)
}

// recoverDirLocked empties a work folder (ours, or a dead instance's taken
// over): each frame is finished (output complete) or re-queued, takeover
// folders inside are emptied the same way and removed, probe files are
// deleted. The folder itself stays unless it is a takeover folder. Moves
// fsync the folders they touch. Names lock held.
func (s *Spool) recoverDirLocked(dir string, errs *[]error) (requeued, finished int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("spool: recover: read %s: %w", dir, err))
		return 0, 0
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, probePrefix):
			_ = os.Remove(filepath.Join(dir, name))
		case e.IsDir() && strings.HasPrefix(name, takeoverPrefix):
			r, f := s.recoverDirLocked(filepath.Join(dir, name), errs)
			requeued, finished = requeued+r, finished+f
		default:
			r, f := s.recoverFrameLocked(dir, name, errs)
			requeued, finished = requeued+r, finished+f
		}
	}
	if strings.HasPrefix(filepath.Base(dir), takeoverPrefix) {
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			*errs = append(*errs, fmt.Errorf("spool: recover: remove emptied %s: %w", dir, err))
		} else {
			_ = syncDir(filepath.Dir(dir))
		}
	}
	return requeued, finished
}

// recoverFrameLocked finishes dir/name if its output is complete in out/,
// else moves it back to inbox/. Names lock held.
func (s *Spool) recoverFrameLocked(dir, name string, errs *[]error) (requeued, finished int) {
	if s.hasOwnOutput(dir, name) {
		if err := s.finishRecoveredLocked(dir, name); err != nil {
			*errs = append(*errs, fmt.Errorf("spool: recover: finish %s: %w", name, err))
			return 0, 0
		}
		return 0, 1
	}
	final, err := s.moveLocked(dir, name, Inbox)
	if err != nil {
		if final == "" && !errors.Is(err, ErrGone) {
			*errs = append(*errs, fmt.Errorf("spool: recover: requeue %s: %w", name, err))
		}
		if final == "" {
			return 0, 0
		}
	}
	if final != name {
		s.log("warn", "re-queued frame renamed: inbox/ holds a newer file of the same name",
			"name", name, "as", final)
	}
	return 1, 0
}

// hasOwnOutput reports whether dir/NAME (a frame in a work folder) has its
// output in out/NAME: a regular file published after the frame was claimed
// (its ctime, which publishing sets and no one can set back, is not before
// the frame's ctime, which the claim's rename set; the mtime may be the
// original's, output.keep_mtime; a takeover renames the folder, not the
// frame, so the frame's ctime stays). The claim made sure out/NAME was free
// in every work folder, so such a file is this frame's; the time check
// keeps a spool written by an older hidiffd (which reused out/ names) from
// passing another frame's output off as this one's.
func (s *Spool) hasOwnOutput(dir, name string) bool {
	ofi, err := os.Lstat(filepath.Join(s.dirs[Out], name))
	if err != nil || !ofi.Mode().IsRegular() {
		return false
	}
	wfi, err := os.Lstat(filepath.Join(dir, name))
	if err != nil {
		return false
	}
	ost, ok1 := ofi.Sys().(*syscall.Stat_t)
	wst, ok2 := wfi.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 {
		return false
	}
	return !time.Unix(ost.Ctim.Unix()).Before(time.Unix(wst.Ctim.Unix()))
}

// finishRecoveredLocked is Finish for a frame found in a work folder with
// its output. Names lock held.
func (s *Spool) finishRecoveredLocked(dir, name string) error {
	if !s.opts.KeepOriginals {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		s.log("info", "finished interrupted frame: its output was complete; original deleted (keep_originals = false)", "name", name)
		return nil
	}
	final, err := s.moveLocked(dir, name, Done)
	if final == "" {
		return err
	}
	s.log("info", "finished interrupted frame: its output was complete", "name", name, "done", final)
	if final != name {
		s.log("warn", "done/ holds a file of this name that hidiffd did not put there; original kept under another name",
			"name", name, "as", final, "output", name)
	}
	return err
}

// Claim moves inbox/NAME into work/ with one atomic rename, under the name
// the frame keeps from now on: NAME, or the first free "stem.N.ext" when
// NAME is taken in work/, out/, done/ or failed/ (see the package comment).
// ErrGone: the file vanished (another claimer, or the user removed it).
func (s *Spool) Claim(name string) (*Job, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	src := filepath.Join(s.dirs[Inbox], name)
	s.lockNames()
	defer s.unlockNames()
	// No fsync: if a power loss undoes the claim the frame is back in inbox/,
	// which is still exactly one state; the later renames fsync both folders.
	final, err := s.reserveLocked(name, func(cand string) error {
		dst := filepath.Join(s.dirs[Work], cand)
		err := s.renameNoReplace(src, dst)
		if errors.Is(err, fs.ErrNotExist) {
			// An NFS client that resends a rename whose reply was lost
			// gets ENOENT for a rename that happened. cand was free in
			// every work folder under the names lock and no one else
			// renames into ours: if it is there now, it is this frame.
			if _, serr := os.Lstat(dst); serr == nil {
				return nil
			}
		}
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: inbox/%s", ErrGone, name)
	default:
		return nil, fmt.Errorf("spool: claim %s: %w", name, err)
	}
	s.logRenamed(name, final)
	j := &Job{Name: final, Arrived: name, Path: filepath.Join(s.dirs[Work], final)}
	if fi, err := os.Lstat(j.Path); err == nil {
		j.file = idOf(fi)
	}
	return j, nil
}

// frameNameMax is the longest frame name: failed/NAME.error.json must fit
// NAME_MAX.
const frameNameMax = nameMax - len(ErrorSuffix)

// reserveLocked tries place(cand) for the candidate names of a frame that
// arrived as name (name itself, shortened to frameNameMax, then stem.N.ext)
// that no frame or output holds in work/, out/, done/ or failed/, until
// place succeeds; a place that fails with fs.ErrExist (someone outside the
// daemon took the name meanwhile) moves on to the next candidate. Names
// ending in .error.json are skipped: in failed/ they belong to records.
// It returns the name placed. The names lock must be held.
func (s *Spool) reserveLocked(name string, place func(cand string) error) (string, error) {
	dirs := s.frameDirsLocked()
	for i := 0; i < maxSuffix; i++ {
		cand := candidate(name, i, frameNameMax)
		if strings.HasSuffix(cand, ErrorSuffix) {
			continue
		}
		taken, err := s.takenLocked(dirs, cand)
		if err != nil {
			return "", err
		}
		if taken {
			continue
		}
		switch err := place(cand); {
		case err == nil:
			return cand, nil
		case errors.Is(err, fs.ErrExist):
			continue
		default:
			return "", err
		}
	}
	return "", fmt.Errorf("no free name after %d tries", maxSuffix)
}

// takenLocked reports whether a frame or output of this name exists in
// out/, done/, failed/ or one of the work folders frameDirs (every
// instance's). A record in failed/ without its frame does not count: it is
// a leftover of a crash that Fail overwrites.
func (s *Spool) takenLocked(frameDirs []string, name string) (bool, error) {
	paths := []string{filepath.Join(s.dirs[Out], name), filepath.Join(s.dirs[Done], name), filepath.Join(s.dirs[Failed], name)}
	for _, d := range frameDirs {
		paths = append(paths, filepath.Join(d, name))
	}
	for _, p := range paths {
		_, err := os.Lstat(p)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, fs.ErrNotExist):
		default:
			return false, err
		}
	}
	return false, nil
}

// logRenamed says why a frame does not keep the name it arrived with.
func (s *Spool) logRenamed(arrived, final string) {
	switch {
	case final == arrived:
	case final == candidate(arrived, 0, frameNameMax):
		s.log("info", "long name shortened so that NAME.error.json fits the 255-byte limit",
			"name", arrived, "as", final)
	default:
		s.log("info", "name taken by an earlier frame (in work/, out/, done/ or failed/); this frame and its output take the next free name",
			"name", arrived, "as", final)
	}
}

// WriteOutput writes the job's output: write fills a temporary file in out/
// (.NAME.hidiffd-tmp-XXXX, mode 0640), which is then fsynced, closed and
// renamed to out/NAME without replacing anything (ErrOutputExists if a file
// of that name appeared since the claim), and out/ is fsynced
// (durable.Write). On any error the temporary file is removed and the
// original stays in work/. Filesystem failures (disk full, read-only,
// permission, I/O error, out/ missing) satisfy IsTransient; an error returned
// by write itself is transient only if it wraps such an errno.
func (s *Spool) WriteOutput(j *Job, write func(f *os.File) error) error {
	if j == nil || checkName(j.Name) != nil {
		return ErrBadName
	}
	// A frame taken over by another daemon while this one stalled past
	// its lease is no longer ours to publish: that daemon runs it again.
	// Checked once the output is written, just before it is published.
	mine := func(f *os.File) error {
		if err := write(f); err != nil {
			return err
		}
		if mine, err := s.stillMine(j); err != nil {
			return err
		} else if !mine {
			return errNotMine(j)
		}
		return nil
	}
	published, err := s.publish(j.Name, "output "+j.Name, "output for "+j.Name, mine)
	if published {
		// Also when only out/'s fsync failed: the output is visible but
		// maybe not durable; the original stays until it is (the caller
		// unpublishes it and retries).
		j.written, j.Output = true, j.Name
	}
	return err
}

// WriteBeside writes out/OUTPUT+suffix, a file that belongs to the job's
// output (its NAME.json sidecar), after a successful WriteOutput and the
// same way: a temporary dotfile filled by write, fsynced and renamed
// without replacing anything (ErrOutputExists: a file of that name is
// there, perhaps another frame's output), then out/ fsynced. Errors are
// classified like WriteOutput's.
func (s *Spool) WriteBeside(j *Job, suffix string, write func(f *os.File) error) error {
	if j == nil || !j.written || checkName(j.Output+suffix) != nil {
		return ErrNoOutput
	}
	name := j.Output + suffix
	published, err := s.publish(name, name, name, write)
	if published {
		j.beside = append(j.beside, name)
	}
	return err
}

// publish writes out/name durably without replacing anything; what names
// the file in errors ("output NAME"), created in "create ... in out/".
// published is true once out/name is in place (also when out/'s fsync then
// failed). Every failure but write's own is transient.
func (s *Spool) publish(name, what, created string, write func(f *os.File) error) (published bool, err error) {
	err = durable.Write(filepath.Join(s.dirs[Out], name), durable.Options{Perm: fileMode, NoReplace: &s.noReplace}, write)
	var de *durable.Error
	if err == nil || !errors.As(err, &de) {
		return err == nil, err
	}
	switch de.Op {
	case durable.OpCreate:
		return false, transient(fmt.Errorf("spool: create %s in out/: %w", created, de.Err))
	case durable.OpWrite:
		return false, fmt.Errorf("spool: write %s: %w", what, de.Err)
	case durable.OpSync:
		return false, transient(fmt.Errorf("spool: fsync %s: %w", what, de.Err))
	case durable.OpClose:
		return false, transient(fmt.Errorf("spool: close %s: %w", what, de.Err))
	case durable.OpRename:
		if errors.Is(de.Err, fs.ErrExist) {
			return false, fmt.Errorf("%w: out/%s", ErrOutputExists, name)
		}
		return false, transient(fmt.Errorf("spool: publish %s: %w", what, de.Err))
	default: // durable.OpSyncDir
		return true, transient(fmt.Errorf("spool: fsync out/: %w", de.Err))
	}
}

// Unpublish removes the job's output from out/ (and fsyncs out/): for a
// frame whose original goes back to inbox/ after its output was published
// (Finish failed), so that the retry writes the one output of this frame
// again instead of leaving a second one. A job without an output is left
// alone, and so is one whose original is no longer in work/ (logged): a
// sweeper took this instance over, saw the output complete and finished
// the frame, so the output is that frame's one result. The check and the
// removal hold the names lock, which such a sweeper holds while it moves
// the frame.
func (s *Spool) Unpublish(j *Job) error {
	if j == nil || checkName(j.Name) != nil {
		return ErrBadName
	}
	if !j.written {
		return nil
	}
	s.lockNames()
	defer s.unlockNames()
	if mine, err := s.stillMine(j); err != nil {
		return fmt.Errorf("spool: unpublish %s: %w", j.Name, err)
	} else if !mine {
		j.written, j.beside = false, nil
		s.log("warn", "output not taken back: the frame left work/ (taken over by another daemon, which found "+
			"the output complete and finished it); the output stays", "name", j.Name)
		return nil
	}
	for _, name := range append([]string{j.Name}, j.beside...) {
		if err := os.Remove(filepath.Join(s.dirs[Out], name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: remove output %s: %w", name, err)
		}
	}
	j.written, j.beside = false, nil
	return syncDir(s.dirs[Out])
}

// Finish completes a job whose WriteOutput succeeded: work/NAME moves to
// done/NAME (a taken name gets a ".N" suffix before the extension) or, with
// KeepOriginals false, is deleted. Both folders are fsynced.
func (s *Spool) Finish(j *Job) error {
	if j == nil || checkName(j.Name) != nil {
		return ErrBadName
	}
	if !j.written {
		return ErrNoOutput
	}
	if mine, err := s.stillMine(j); err != nil {
		return fmt.Errorf("spool: finish %s: %w", j.Name, err)
	} else if !mine {
		return errNotMine(j)
	}
	if !s.opts.KeepOriginals {
		if err := os.Remove(filepath.Join(s.dirs[Work], j.Name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: work/%s", ErrGone, j.Name)
			}
			return fmt.Errorf("spool: remove finished original %s: %w", j.Name, err)
		}
		if err := syncDir(s.dirs[Work]); err != nil {
			return fmt.Errorf("spool: fsync work/: %w", err)
		}
		return nil
	}
	final, err := s.move(Work, j.Name, Done)
	if final == "" {
		return fmt.Errorf("spool: finish %s: %w", j.Name, err)
	}
	if err != nil {
		// Moved, not yet durable: the frame is in done/ beside its output,
		// which is a consistent state; say so and go on.
		s.log("warn", "original moved to done/ but the folder could not be fsynced", "name", j.Name, "error", err.Error())
	}
	if final != j.Name {
		s.log("warn", "done/ holds a file of this name that hidiffd did not put there; original kept under another name",
			"name", j.Name, "as", final, "output", j.Name)
	}
	j.Path = filepath.Join(s.dirs[Done], final)
	return nil
}

// Fail moves work/NAME to failed/NAME with the record failed/NAME.error.json.
// The record is written first (temporary file, fsync, rename), so a crash
// between the two steps leaves only a harmless record: the frame is still in
// work/, Recover re-queues it and drops the orphan record, and a later Fail
// overwrites it. A taken name in failed/ gets a ".N" suffix before the
// extension; the record then names both ("name" and "file").
func (s *Spool) Fail(j *Job, stage, reason string) error {
	if j == nil || checkName(j.Name) != nil {
		return ErrBadName
	}
	arrived := j.Arrived
	if arrived == "" {
		arrived = j.Name
	}
	if mine, err := s.stillMine(j); err == nil && !mine {
		return errNotMine(j)
	}
	return s.fail(j.Name, arrived, stage, reason)
}

// fail moves work/name to failed/ with its record; arrived is the name the
// frame came with, for the record.
func (s *Spool) fail(name, arrived, stage, reason string) error {
	src := filepath.Join(s.dirs[Work], name)
	fi, err := os.Lstat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s/%s", ErrGone, Work, name)
		}
		return fmt.Errorf("spool: fail %s: %w", name, err)
	}
	rec := ErrorRecord{
		Name:   arrived,
		Reason: reason,
		Stage:  stage,
		Time:   time.Now().UTC().Format(time.RFC3339Nano),
		Size:   fi.Size(),
		Type:   typeName(fi.Mode()),
	}
	dir := s.dirs[Failed]

	s.lockNames()
	final, err := s.failMoveLocked(src, dir, name, &rec)
	s.unlockNames()
	if err != nil {
		return err
	}
	if final != name {
		s.log("warn", "failed/ holds a file of this name that hidiffd did not put there; frame kept under another name",
			"name", name, "as", final)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("spool: fsync failed/: %w", err)
	}
	if err := syncDir(s.dirs[Work]); err != nil {
		return fmt.Errorf("spool: fsync %s/: %w", Work, err)
	}
	return nil
}

func (s *Spool) failMoveLocked(src, dir, name string, rec *ErrorRecord) (string, error) {
	for i := 0; i < maxSuffix; i++ {
		// The claim made name short enough for its record; the cut is
		// only a guard.
		cand := candidate(name, i, frameNameMax)
		// A frame never takes a name ending in .error.json, so every such
		// file in failed/ is a record and can never overwrite a frame.
		if strings.HasSuffix(cand, ErrorSuffix) {
			continue
		}
		if _, err := os.Lstat(filepath.Join(dir, cand)); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("spool: fail %s: %w", name, err)
		}
		err := s.failPlaceLocked(src, dir, cand, rec)
		switch {
		case err == nil:
			return cand, nil
		case errors.Is(err, fs.ErrExist):
			continue
		default:
			return "", goneOr(src, fmt.Errorf("spool: move %s to failed/: %w", name, err))
		}
	}
	return "", fmt.Errorf("spool: fail %s: no free name in failed/ after %d tries", name, maxSuffix)
}

// goneOr is ErrGone when src no longer exists (another process took or
// removed it), else err.
func goneOr(src string, err error) error {
	if _, serr := os.Lstat(src); errors.Is(serr, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrGone, src)
	}
	return err
}

// failPlaceLocked writes failed/cand.error.json, then renames src to
// failed/cand without replacing anything. fs.ErrExist: someone outside the
// daemon created failed/cand meanwhile (the record is dropped again).
func (s *Spool) failPlaceLocked(src, dir, cand string, rec *ErrorRecord) error {
	rec.File = ""
	if cand != rec.Name {
		rec.File = cand
	}
	if err := writeRecord(dir, cand+ErrorSuffix, rec); err != nil {
		return fmt.Errorf("write error record: %w", err)
	}
	if err := s.renameNoReplace(src, filepath.Join(dir, cand)); err != nil {
		os.Remove(filepath.Join(dir, cand+ErrorSuffix))
		return err
	}
	return nil
}

// writeRecord writes dir/name durably (durable.Write), replacing an older
// record of that name: one that a crash left without its frame.
func writeRecord(dir, name string, rec *ErrorRecord) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return durable.WriteFile(filepath.Join(dir, name), data, fileMode)
}

// Release puts a claimed frame back: work/NAME -> inbox/NAME (shutdown in the
// middle of a frame, or a transient error such as a full disk). If a newer
// file of the same name arrived in inbox/ meanwhile, the released frame gets
// a ".N" suffix before the extension. Both folders are fsynced.
func (s *Spool) Release(j *Job) error {
	if j == nil || checkName(j.Name) != nil {
		return ErrBadName
	}
	if mine, err := s.stillMine(j); err == nil && !mine {
		return errNotMine(j)
	}
	final, err := s.move(Work, j.Name, Inbox)
	if final == "" {
		return fmt.Errorf("spool: release %s: %w", j.Name, err)
	}
	if err != nil {
		s.log("warn", "frame returned to inbox/ but the folders could not be fsynced", "name", j.Name, "error", err.Error())
	}
	if final != j.Name {
		s.log("warn", "released frame renamed: inbox/ holds a newer file of the same name",
			"name", j.Name, "as", final)
	}
	j.Path = filepath.Join(s.dirs[Inbox], final)
	return nil
}

const maxSuffix = 10000

// move renames from/NAME into to/ under the first free name and fsyncs both
// folders. It returns the name used; a non-empty name with an error means
// the rename happened but an fsync failed.
func (s *Spool) move(from, name, to string) (string, error) {
	s.lockNames()
	defer s.unlockNames()
	return s.moveLocked(s.dirs[from], name, to)
}

// moveLocked is move from the folder dir. Names lock held.
func (s *Spool) moveLocked(dir, name, to string) (string, error) {
	src := filepath.Join(dir, name)
	final, err := func() (string, error) {
		for i := 0; i < maxSuffix; i++ {
			cand := candidate(name, i, nameMax)
			err := s.renameNoReplace(src, filepath.Join(s.dirs[to], cand))
			switch {
			case err == nil:
				return cand, nil
			case errors.Is(err, fs.ErrExist):
				continue
			case errors.Is(err, fs.ErrNotExist):
				return "", fmt.Errorf("%w: %s", ErrGone, src)
			default:
				return "", err
			}
		}
		return "", fmt.Errorf("no free name in %s/ after %d tries", to, maxSuffix)
	}()
	if err != nil {
		return "", err
	}
	// Destination first: after a power loss the frame must be found in
	// the new folder rather than in neither.
	if err := syncDir(s.dirs[to]); err != nil {
		return final, fmt.Errorf("fsync %s/: %w", to, err)
	}
	if err := syncDir(dir); err != nil {
		return final, fmt.Errorf("fsync %s: %w", dir, err)
	}
	return final, nil
}

// renameNoReplace renames src to dst unless dst exists (fs.ErrExist). Where
// the filesystem lacks RENAME_NOREPLACE it falls back to a hard link and an
// unlink (directories, and file systems without hard links: a check and a
// rename, race-free only against other spool calls, which hold the names
// lock or own the name); see durable.NoReplace.
func (s *Spool) renameNoReplace(src, dst string) error { return s.noReplace.Rename(src, dst) }

// nameMax is NAME_MAX on Linux filesystems, in bytes.
const nameMax = 255

// candidate is name for i == 0, else the name with ".i" before the
// extension (frame.jpg -> frame.1.jpg, frame -> frame.1), with the stem cut so the result is at most
// max bytes (max 0: no limit). Cutting keeps the extension and the suffix, so
// successive candidates stay distinct.
func candidate(name string, i, max int) string {
	if i == 0 && (max == 0 || len(name) <= max) {
		return name
	}
	ext := filepath.Ext(name)
	if ext == name || len(ext) > 32 { // ".hidden" has no stem; a huge "extension" is none
		ext = ""
	}
	stem := strings.TrimSuffix(name, ext)
	suffix := ""
	if i > 0 {
		suffix = "." + strconv.Itoa(i)
	}
	if max > 0 && len(stem)+len(suffix)+len(ext) > max {
		n := max - len(suffix) - len(ext)
		if n < 1 {
			n = 1
		}
		for n > 1 && !utf8.RuneStart(stem[n]) {
			n-- // do not split a UTF-8 sequence
		}
		stem = stem[:n]
	}
	return stem + suffix + ext
}

func randHex() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncDir fsyncs a folder (durable.SyncDir).
func syncDir(dir string) error { return durable.SyncDir(dir) }

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return ""
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "dir"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	default:
		return "other"
	}
}

func (s *Spool) log(level, msg string, kv ...any) {
	if s.opts.Log != nil {
		s.opts.Log(level, msg, kv...)
	}
}
