package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openInstance opens root as instance id with a lease (Options.Lock).
func openInstance(t *testing.T, root, id string, opts Options) *Spool {
	t.Helper()
	opts.Instance, opts.Lock = id, true
	if opts.Lease == 0 {
		opts.Lease, opts.LeaseMargin = 2*time.Second, time.Second
	}
	s, err := Open(root, opts)
	if err != nil {
		t.Fatalf("open instance %s: %v", id, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ageLease sets instance id's lease mtime to d before now: the controlled
// clock of these tests (leases are compared by mtime, no test waits).
func ageLease(t *testing.T, root, id string, d time.Duration) {
	t.Helper()
	old := time.Now().Add(-d)
	if err := os.Chtimes(filepath.Join(root, Leases, id), old, old); err != nil {
		t.Fatal(err)
	}
}

func TestValidInstance(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"host-a", true}, {"gpu0.host_1", true}, {"A", true},
		{"", false}, {".hidden", false}, {"-x", false}, {"a/b", false}, {"a b", false},
		{"..", false}, {strings.Repeat("x", 65), false}, {"é", false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if err := ValidInstance(tc.id); (err == nil) != tc.ok {
				t.Fatalf("ValidInstance(%q) = %v, want ok=%v", tc.id, err, tc.ok)
			}
		})
	}
	t.Run("expand", func(t *testing.T) {
		got := ExpandInstance("%h.gpu1")
		if !strings.HasSuffix(got, ".gpu1") || strings.Contains(got, "%") || ValidInstance(got) != nil {
			t.Fatalf("ExpandInstance = %q", got)
		}
	})
	t.Run("open refuses", func(t *testing.T) {
		_, err := Open(t.TempDir(), Options{Instance: "a/b"})
		if err == nil || !strings.Contains(err.Error(), `"a/b"`) {
			t.Fatalf("want an error naming the id, got %v", err)
		}
	})
}

func TestInstancesShareSpool(t *testing.T) {
	root := t.TempDir()
	a := openInstance(t, root, "a", Options{})
	b := openInstance(t, root, "b", Options{})
	if a.Dir(Work) == b.Dir(Work) || filepath.Dir(a.Dir(Work)) != filepath.Join(root, Work) {
		t.Fatalf("work folders %s and %s", a.Dir(Work), b.Dir(Work))
	}
	t.Run("same id refused", func(t *testing.T) {
		_, err := Open(root, Options{Instance: "a", Lock: true, Lease: 2 * time.Second, LeaseMargin: time.Second})
		if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "spool.instance") {
			t.Fatalf("second daemon with id a: %v", err)
		}
	})
	t.Run("old version refused", func(t *testing.T) {
		// A version before instances holds .hidiffd.lock exclusively.
		root := t.TempDir()
		f, err := os.OpenFile(filepath.Join(root, lockName), os.O_RDWR|os.O_CREATE, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		_, err = Open(root, Options{Instance: "a", Lock: true})
		if err == nil || !strings.Contains(err.Error(), "older version") {
			t.Fatalf("want refusal naming the older version, got %v", err)
		}
	})
	t.Run("same name claimed by two", func(t *testing.T) {
		// a.jpg in a's work/ keeps b from taking that name for another
		// frame: outputs are named after claims.
		drop(t, a, "x.jpg", "first")
		ja, err := a.Claim("x.jpg")
		if err != nil {
			t.Fatal(err)
		}
		drop(t, b, "x.jpg", "second")
		jb, err := b.Claim("x.jpg")
		if err != nil {
			t.Fatal(err)
		}
		if ja.Name != "x.jpg" || jb.Name != "x.1.jpg" {
			t.Fatalf("names %s and %s, want x.jpg and x.1.jpg", ja.Name, jb.Name)
		}
	})
}

// TestClaimRace: several daemons (spools of different instances, each
// with several workers) claim the same inbox files at once; each file is
// claimed exactly once, the losers get ErrGone.
func TestClaimRace(t *testing.T) {
	root := t.TempDir()
	var sp []*Spool
	for _, id := range []string{"a", "b", "c"} {
		sp = append(sp, openInstance(t, root, id, Options{}))
	}
	const n = 60
	for i := range n {
		drop(t, sp[0], "f"+string(rune('A'+i%26))+strings.Repeat("z", i/26)+".jpg", "x")
	}
	ents, _ := os.ReadDir(sp[0].Dir(Inbox))
	var mu sync.Mutex
	won := map[string]int{}
	var wg sync.WaitGroup
	for _, s := range sp {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, e := range ents {
					j, err := s.Claim(e.Name())
					switch {
					case err == nil:
						mu.Lock()
						won[e.Name()]++
						if j.Name != e.Name() {
							t.Errorf("%s claimed as %s", e.Name(), j.Name)
						}
						mu.Unlock()
					case !errors.Is(err, ErrGone):
						t.Errorf("claim %s: %v", e.Name(), err)
					}
				}
			}()
		}
	}
	wg.Wait()
	if len(won) != n {
		t.Fatalf("%d of %d files claimed", len(won), n)
	}
	for name, k := range won {
		if k != 1 {
			t.Errorf("%s claimed %d times", name, k)
		}
	}
}

func TestSweep(t *testing.T) {
	for _, tc := range []struct {
		name      string
		age       time.Duration // of the dead instance's lease
		deadLease time.Duration // its spool.lease (0: the sweeper's)
		alive     bool          // its daemon still holds the lease lock
		output    bool          // one frame's output is already in out/
		wantTaken bool
	}{
		{name: "expired", age: 10 * time.Second, wantTaken: true},
		{name: "expired with output", age: 10 * time.Second, output: true, wantTaken: true},
		{name: "within lease and margin", age: 2500 * time.Millisecond},
		{name: "expired but locked (live, stalled)", age: 10 * time.Second, alive: true},
		// Its record says 60 s: 10 s without a heartbeat is within that.
		{name: "within its own longer lease", age: 10 * time.Second, deadLease: time.Minute},
		{name: "past its own longer lease", age: 2 * time.Minute, deadLease: time.Minute, wantTaken: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dead := openInstance(t, root, "dead", Options{KeepOriginals: true, Lease: tc.deadLease, LeaseMargin: time.Second})
			live := openInstance(t, root, "live", Options{KeepOriginals: true})
			for _, n := range []string{"p.jpg", "q.jpg"} {
				drop(t, dead, n, n)
				if _, err := dead.Claim(n); err != nil {
					t.Fatal(err)
				}
			}
			if tc.output {
				if err := os.WriteFile(filepath.Join(root, Out, "p.jpg"), []byte("out"), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.alive {
				dead.Close() // as a SIGKILL would: the flock goes
			}
			ageLease(t, root, "dead", tc.age)

			took, err := live.Sweep()
			if err != nil {
				t.Fatal(err)
			}
			if got := len(took) == 1; got != tc.wantTaken {
				t.Fatalf("took over %v, want taken=%v", took, tc.wantTaken)
			}
			work, _ := os.ReadDir(filepath.Join(root, Work, "dead"))
			inbox, _ := os.ReadDir(live.Dir(Inbox))
			if !tc.wantTaken {
				if len(work) != 2 || len(inbox) != 0 {
					t.Fatalf("a live instance's frames moved: work/dead %d, inbox %d", len(work), len(inbox))
				}
				return
			}
			if _, err := os.Lstat(filepath.Join(root, Work, "dead")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("work/dead/ still there: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(root, Leases, "dead")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("leases/dead still there: %v", err)
			}
			own, _ := os.ReadDir(live.Dir(Work))
			if len(own) != 0 {
				t.Errorf("takeover folder left in work/live/: %v", own)
			}
			wantIn, wantDone := 2, 0
			if tc.output {
				wantIn, wantDone = 1, 1
			}
			done, _ := os.ReadDir(live.Dir(Done))
			if len(inbox) != wantIn || len(done) != wantDone || took[0].Requeued != wantIn || took[0].Finished != wantDone {
				t.Fatalf("inbox %d done %d (%+v), want %d and %d", len(inbox), len(done), took[0], wantIn, wantDone)
			}
			// A second sweep finds nothing; the dead instance can start again.
			if again, err := live.Sweep(); err != nil || len(again) != 0 {
				t.Fatalf("second sweep: %v %v", again, err)
			}
			openInstance(t, root, "dead", Options{})
		})
	}
}

// TestHeartbeatAfterTakeover: a daemon that stalled past its lease where
// locks are not shared (NFS mounted nolock) is taken over; its next
// heartbeat finds its lease gone, takes it again, says so, and gets a new
// work folder, so it claims frames again instead of idling as a zombie;
// its old job can no longer publish an output (the taker re-queued it).
func TestHeartbeatAfterTakeover(t *testing.T) {
	root := t.TempDir()
	slow := openInstance(t, root, "slow", Options{})
	other := openInstance(t, root, "other", Options{})
	drop(t, slow, "s.jpg", "x")
	j, err := slow.Claim("s.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Heartbeat(); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	// The stall, with a lock the other daemon does not see (nolock): the
	// lease old, its flock dropped but the descriptor kept.
	if err := unix.Flock(int(slow.lease.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	ageLease(t, root, "slow", time.Minute)
	if took, err := other.Sweep(); err != nil || len(took) != 1 {
		t.Fatalf("sweep: %v %v", took, err)
	}
	if err := slow.WriteOutput(j, func(f *os.File) error { _, err := f.WriteString("o"); return err }); !errors.Is(err, ErrGone) {
		t.Fatalf("WriteOutput of a taken-over frame: %v, want ErrGone", err)
	}
	if out, _ := os.ReadDir(slow.Dir(Out)); len(out) != 0 {
		t.Fatalf("out/ holds %d files", len(out))
	}
	err = slow.Heartbeat()
	if err == nil || !strings.Contains(err.Error(), "taken over") || !strings.Contains(err.Error(), `"slow"`) {
		t.Fatalf("heartbeat after takeover: %v", err)
	}
	if fi, err := os.Stat(slow.Dir(Work)); err != nil || !fi.IsDir() {
		t.Fatalf("work folder not recreated: %v", err)
	}
	if !samePath(slow.lease, filepath.Join(root, Leases, "slow")) {
		t.Fatal("the lease was not taken again")
	}
	if err := slow.Heartbeat(); err != nil {
		t.Fatalf("heartbeat once recovered: %v", err)
	}
	drop(t, slow, "t.jpg", "y")
	if _, err := slow.Claim("t.jpg"); err != nil {
		t.Fatalf("claim after recovery: %v", err)
	}
	if took, err := other.Sweep(); err != nil || len(took) != 0 {
		t.Fatalf("the recovered instance was taken over again: %v %v", took, err)
	}
}

// TestMissingLease: a work folder whose lease file is gone (removed by
// hand) is never taken over on the folder's age: an empty lease is put in
// place; a live instance takes it at its next heartbeat, a dead one is
// taken over once that file is a lease and its margin old.
func TestMissingLease(t *testing.T) {
	for _, alive := range []bool{true, false} {
		t.Run(map[bool]string{true: "alive", false: "dead"}[alive], func(t *testing.T) {
			root := t.TempDir()
			x := openInstance(t, root, "x", Options{})
			sw := openInstance(t, root, "sweeper", Options{})
			drop(t, x, "f.jpg", "f")
			if _, err := x.Claim("f.jpg"); err != nil {
				t.Fatal(err)
			}
			if !alive {
				x.Close()
			}
			lp, wdir := filepath.Join(root, Leases, "x"), filepath.Join(root, Work, "x")
			if err := os.Remove(lp); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-time.Hour) // an idle folder
			if err := os.Chtimes(wdir, old, old); err != nil {
				t.Fatal(err)
			}
			if took, err := sw.Sweep(); err != nil || len(took) != 0 {
				t.Fatalf("taken over without a lease to lock: %v %v", took, err)
			}
			if ents, _ := os.ReadDir(wdir); len(ents) != 1 {
				t.Fatalf("work/x/ holds %d files, want its frame", len(ents))
			}
			if _, err := os.Stat(lp); err != nil {
				t.Fatalf("no lease put in place: %v", err)
			}
			if alive {
				if err := x.Heartbeat(); err == nil || !strings.Contains(err.Error(), "lost its lease") {
					t.Fatalf("heartbeat: %v", err)
				}
				if !samePath(x.lease, lp) {
					t.Fatal("the live instance did not take the lease put in place")
				}
			}
			ageLease(t, root, "x", time.Minute)
			took, err := sw.Sweep()
			if err != nil {
				t.Fatal(err)
			}
			if got := len(took) == 1; got == alive {
				t.Fatalf("took over %v (alive %v)", took, alive)
			}
		})
	}
}

// TestTakeOverRechecksUnderNamesLock: the dead instance restarts (a new
// lease file, its work folder, a claim) while the sweeper that locked its
// old lease waits for the names lock; the sweeper then leaves it alone.
func TestTakeOverRechecksUnderNamesLock(t *testing.T) {
	root := t.TempDir()
	openInstance(t, root, "x", Options{}).Close()
	ageLease(t, root, "x", time.Minute)
	sw := openInstance(t, root, "sweeper", Options{})
	var x *Spool
	sw.beforeNames = func() {
		sw.beforeNames = nil
		// Another sweeper finished with x and removed its lease; x started
		// again and claimed a frame.
		if err := os.Remove(filepath.Join(root, Leases, "x")); err != nil {
			t.Fatal(err)
		}
		x = openInstance(t, root, "x", Options{})
		drop(t, x, "f.jpg", "f")
		if _, err := x.Claim("f.jpg"); err != nil {
			t.Fatal(err)
		}
	}
	if took, err := sw.Sweep(); err != nil || len(took) != 0 {
		t.Fatalf("sweep: %v %v", took, err)
	}
	if x == nil {
		t.Fatal("the sweeper never got to the names lock")
	}
	if ents, _ := os.ReadDir(x.Dir(Work)); len(ents) != 1 {
		t.Fatalf("the restarted instance's work folder holds %d files, want its frame", len(ents))
	}
}

// TestTakeLeaseWaitsForSweeper: an instance restarting while a sweeper
// holds its expired lease (taking its frames over, for longer than the
// lease) waits and says so, then starts once the sweeper removed the file.
func TestTakeLeaseWaitsForSweeper(t *testing.T) {
	root := t.TempDir()
	openInstance(t, root, "x", Options{}).Close()
	ageLease(t, root, "x", time.Minute)
	lp := filepath.Join(root, Leases, "x")
	sweeper, err := os.OpenFile(lp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sweeper.Close()
	if err := unix.Flock(int(sweeper.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan string, 1)
	logf := func(level, msg string, kv ...any) {
		if strings.Contains(msg, "being taken over") {
			select {
			case waiting <- msg:
			default:
			}
		}
	}
	done := make(chan error, 1)
	go func() {
		// The lease is a minute old: stale for this 2 s lease, whose
		// 3 s with its margin bound the wait (TestTakeLeaseGivesUpOnAHang).
		s, err := Open(root, Options{Instance: "x", Lock: true, Lease: 2 * time.Second, LeaseMargin: time.Second, Log: logf})
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Open returned while a sweeper held the lease: %v", err)
	case <-waiting:
	}
	if err := os.Remove(lp); err != nil {
		t.Fatal(err)
	}
	sweeper.Close()
	if err := <-done; err != nil {
		t.Fatalf("Open once the sweeper was done: %v", err)
	}
}

// TestTakeLeaseGivesUpOnAHang: a lease locked and stale for longer than a
// lease and its margin is not a takeover in progress but a hung process
// with this instance: Open refuses, naming the instance and the lease,
// instead of waiting for ever.
func TestTakeLeaseGivesUpOnAHang(t *testing.T) {
	root := t.TempDir()
	openInstance(t, root, "x", Options{}).Close()
	ageLease(t, root, "x", time.Minute)
	lp := filepath.Join(root, Leases, "x")
	hung, err := os.OpenFile(lp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	if err := unix.Flock(int(hung.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root, Options{Instance: "x", Lock: true, Lease: 100 * time.Millisecond, LeaseMargin: 50 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("Open took a lease another process holds")
	}
	for _, want := range []string{`instance "x"`, lp, "hangs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestNamesLockWarnsOnce: a names lock that cannot be taken (ENOLCK on
// NFS without a lock manager; here a closed descriptor) is logged once,
// naming the file and the error.
func TestNamesLockWarnsOnce(t *testing.T) {
	var mu sync.Mutex
	var warns []string
	s := openInstance(t, t.TempDir(), "me", Options{Log: func(level, msg string, kv ...any) {
		if level == "warn" && strings.Contains(msg, "names lock") {
			mu.Lock()
			warns = append(warns, fmt.Sprint(msg, kv))
			mu.Unlock()
		}
	}})
	s.names.Close() // the fake: flock now fails (EBADF)
	for range 3 {
		s.lockNames()
		s.unlockNames()
	}
	if len(warns) != 1 || !strings.Contains(warns[0], namesLockName) || !strings.Contains(warns[0], "bad file descriptor") {
		t.Fatalf("warnings %q, want one naming %s and the error", warns, namesLockName)
	}
}

// TestNamesLockLongWaitIsSaid: a names lock held (by a hung daemon: here
// another open file description) for longer than a lease is logged, naming
// the lock file, and the wait goes on until it is let go.
func TestNamesLockLongWaitIsSaid(t *testing.T) {
	root := t.TempDir()
	warned := make(chan string, 1)
	s := openInstance(t, root, "me", Options{Lease: 50 * time.Millisecond, LeaseMargin: 50 * time.Millisecond,
		Log: func(level, msg string, kv ...any) {
			if level == "warn" && strings.Contains(msg, "waiting for the names lock") {
				select {
				case warned <- fmt.Sprint(msg, kv):
				default:
				}
			}
		}})
	hung, err := os.OpenFile(filepath.Join(root, namesLockName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	if err := unix.Flock(int(hung.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	locked := make(chan struct{})
	go func() { s.lockNames(); close(locked) }()
	w := <-warned
	if !strings.Contains(w, namesLockName) {
		t.Errorf("warning %q does not name %s", w, namesLockName)
	}
	select {
	case <-locked:
		t.Fatal("took the names lock while another held it")
	default:
	}
	unix.Flock(int(hung.Fd()), unix.LOCK_UN)
	<-locked
	s.unlockNames()
}

// TestJobIsTheFileItClaimed: a frame taken over while its daemon stalled,
// with a newer frame of the same name claimed into the same place since,
// is no longer the stalled job's: it publishes nothing, finishes, fails
// and releases nothing, and the newer frame's own job goes through.
func TestJobIsTheFileItClaimed(t *testing.T) {
	s := openInstance(t, t.TempDir(), "me", Options{KeepOriginals: true})
	drop(t, s, "x.jpg", "first")
	old, err := s.Claim("x.jpg")
	if err != nil {
		t.Fatal(err)
	}
	// The takeover, as a sweeper does it: the frame back in inbox/ (under
	// another name, a newer x.jpg having arrived), then claimed anew.
	if err := os.Rename(old.Path, filepath.Join(s.Dir(Inbox), "x.1.jpg")); err != nil {
		t.Fatal(err)
	}
	drop(t, s, "x.jpg", "second")
	newer, err := s.Claim("x.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if newer.Name != old.Name {
		t.Fatalf("the newer frame was claimed as %s, want the same name %s (the case under test)", newer.Name, old.Name)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"WriteOutput", func() error { return s.WriteOutput(old, writeString("out-first")) }},
		{"Finish", func() error { old.written = true; return s.Finish(old) }},
		{"Fail", func() error { return s.Fail(old, "decode", "stale job") }},
		{"Release", func() error { return s.Release(old) }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.do(); !errors.Is(err, ErrGone) {
				t.Fatalf("%s of the taken-over job: %v, want ErrGone", st.name, err)
			}
		})
	}
	if err := s.WriteOutput(newer, writeString("out-second")); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(newer); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Dir(Out), newer.Name)); string(b) != "out-second" {
		t.Errorf("out/%s = %q, want the newer frame's output", newer.Name, b)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Dir(Done), newer.Name)); string(b) != "second" {
		t.Errorf("done/%s = %q, want the newer frame", newer.Name, b)
	}
}

// TestSweepRetriesItsTakeovers: a takeover folder left in this
// instance's work folder (a takeover whose moves failed) is recovered at
// the next sweep, not only at the next start.
func TestSweepRetriesItsTakeovers(t *testing.T) {
	s := openInstance(t, t.TempDir(), "me", Options{})
	half := filepath.Join(s.Dir(Work), takeoverPrefix+"dead-1234")
	if err := os.Mkdir(half, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "left.jpg"), []byte("y"), 0o640); err != nil {
		t.Fatal(err)
	}
	took, err := s.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if len(took) != 1 || took[0].Instance != "me" || took[0].Requeued != 1 {
		t.Errorf("Sweep reported %+v, want one takeover of instance me with 1 frame re-queued", took)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(Inbox), "left.jpg")); err != nil {
		t.Errorf("the frame is not back in inbox/: %v", err)
	}
	if _, err := os.Stat(half); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the takeover folder is still there: %v", err)
	}
}

// TestRecoverMigratesFlatWork: frames left in work/ itself by a version
// before instances, and a takeover this instance did not finish, are
// recovered at start like its own.
func TestRecoverMigratesFlatWork(t *testing.T) {
	root := t.TempDir()
	s := openInstance(t, root, "me", Options{})
	if err := os.WriteFile(filepath.Join(root, Work, "old.jpg"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	half := filepath.Join(s.Dir(Work), takeoverPrefix+"dead-1234")
	if err := os.Mkdir(half, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "half.jpg"), []byte("y"), 0o640); err != nil {
		t.Fatal(err)
	}
	t.Run("names seen while there", func(t *testing.T) {
		drop(t, s, "half.jpg", "new")
		j, err := s.Claim("half.jpg")
		if err != nil {
			t.Fatal(err)
		}
		if j.Name != "half.1.jpg" {
			t.Fatalf("claimed as %s: a takeover folder's frame name was not seen as taken", j.Name)
		}
		if err := s.Release(j); err != nil {
			t.Fatal(err)
		}
	})
	n, err := s.Recover()
	if err != nil || n != 2 {
		t.Fatalf("Recover = %d, %v; want 2", n, err)
	}
	wantListing(t, s, "inbox/half.1.jpg", "inbox/half.jpg", "inbox/old.jpg")
	if ents, _ := os.ReadDir(filepath.Join(root, Work)); len(ents) != 1 || ents[0].Name() != "me" {
		t.Fatalf("work/ holds %v", ents)
	}
}

func TestOpenChecksClock(t *testing.T) {
	s := openInstance(t, t.TempDir(), "me", Options{})
	if sk := s.ClockSkew(); sk > time.Second || sk < -time.Second {
		t.Fatalf("local file system shows a clock offset of %v", sk)
	}
}

// TestRecoverKeepsOthersTemps: a daemon restarting beside a running one
// leaves the temporary output that one is writing alone; Sweep removes it
// only once it has been untouched for a lease and its margin (the clock is
// moved on through the offset to the file system's clock).
func TestRecoverKeepsOthersTemps(t *testing.T) {
	root := t.TempDir()
	openInstance(t, root, "busy", Options{})
	tmp := filepath.Join(root, Out, ".x.jpg"+tmpMarker+"1234abcd")
	if err := os.WriteFile(tmp, []byte("half an output"), 0o640); err != nil {
		t.Fatal(err)
	}
	b := openInstance(t, root, "restarted", Options{})
	if _, err := b.Recover(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tmp); err != nil {
		t.Fatalf("Recover removed a running daemon's temporary output: %v", err)
	}
	if b.tempsDue.Load() == 0 {
		t.Fatal("no later look at the temporary file was planned")
	}
	b.tempsDue.Store(1) // due now
	if _, err := b.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tmp); err != nil {
		t.Fatalf("a fresh temporary file was removed: %v", err)
	}
	b.skew = time.Minute // a minute later, as the file system sees it
	b.tempsDue.Store(1)
	if _, err := b.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temporary file still there: %v", err)
	}
}

// TestLockExpired: the checks between "this lease looks expired" and a
// takeover, each on a lease file opened before the change.
func TestLockExpired(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, lp string) // after the sweeper opened lp
		want   bool
	}{
		{"expired and free", func(*testing.T, string) {}, true},
		{"locked by its daemon", func(t *testing.T, lp string) {
			f, err := os.Open(lp)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"refreshed meanwhile", func(t *testing.T, lp string) {
			now := time.Now()
			if err := os.Chtimes(lp, now, now); err != nil {
				t.Fatal(err)
			}
		}, false},
		// Another sweeper took the instance over and removed the file,
		// and the instance started again with a new lease.
		{"removed and made again", func(t *testing.T, lp string) {
			if err := os.Remove(lp); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(lp, []byte("{}\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-time.Minute)
			os.Chtimes(lp, old, old) // even if it looked old
		}, false},
		{"removed", func(t *testing.T, lp string) { os.Remove(lp) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			openInstance(t, root, "dead", Options{}).Close()
			ageLease(t, root, "dead", time.Minute)
			s := openInstance(t, root, "sweeper", Options{})
			lp := filepath.Join(root, Leases, "dead")
			lf, err := os.OpenFile(lp, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			tc.change(t, lp)
			ok, err := s.lockExpired(lf, lp, time.Now())
			if err != nil || ok != tc.want {
				t.Fatalf("lockExpired = %v, %v; want %v", ok, err, tc.want)
			}
		})
	}
}
