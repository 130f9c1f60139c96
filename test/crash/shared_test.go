package crash

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Several daemons on one spool (issue 15): real hidiffd binaries, each
// with its own instance id, share one spool while a mixed stream of frames
// arrives; some are SIGKILLed while they hold frames and restarted after a
// random pause (shorter or longer than the lease), and one is killed for
// good. Afterwards every frame is in exactly one of done/ and failed/, each
// valid one with exactly one output, nothing unknown in out/ (a frame run
// twice would leave a second, renamed output), nothing lost; the time the
// others took to take over a dead instance's work/<id>/ is measured from
// the kill to the moment that folder was renamed away.
//
// The lease is short here (2 s, margin 1 s): a takeover comes at most
// lease + margin + one sweep (lease/3) after the last heartbeat.
const (
	sharedLease  = 2 * time.Second
	sharedMargin = time.Second
)

// TestSharedSpool is the version that runs in `make test`: two and three
// daemons, a few dozen frames, a few kills.
func TestSharedSpool(t *testing.T) {
	if testing.Short() {
		t.Skip("several daemons on one spool take a minute or two; skipped with -short")
	}
	for _, tc := range []struct {
		name            string
		daemons, frames int
		kills           int
	}{
		{"two daemons", 2, 16, 1},
		{"three daemons", 3, 30, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runShared(t, tc.daemons, tc.frames, tc.kills, int64(envInt(t, "HIDIFFD_SHARED_SEED", int(time.Now().UnixNano()%1_000_000_000))))
		})
	}
}

// TestSharedRun is the acceptance run of issue 15 (`make shared-run`;
// skipped unless HIDIFFD_SHARED_RUN=1): three daemons, 300 frames, 10
// random SIGKILLs with restarts, then one daemon killed for good. Knobs:
// HIDIFFD_SHARED_DAEMONS, HIDIFFD_SHARED_FILES, HIDIFFD_SHARED_KILLS,
// HIDIFFD_SHARED_SEED, HIDIFFD_CRASH_KEEP=1 keeps the spool.
func TestSharedRun(t *testing.T) {
	if os.Getenv("HIDIFFD_SHARED_RUN") == "" {
		t.Skip("the long run of several daemons takes several minutes: `make shared-run` (HIDIFFD_SHARED_RUN=1)")
	}
	runShared(t, envInt(t, "HIDIFFD_SHARED_DAEMONS", 3), envInt(t, "HIDIFFD_SHARED_FILES", 300),
		envInt(t, "HIDIFFD_SHARED_KILLS", 10), int64(envInt(t, "HIDIFFD_SHARED_SEED", int(time.Now().UnixNano()%1_000_000_000))))
}

func runShared(t *testing.T, nDaemons, nFiles, nKills int, seed int64) {
	if nDaemons < 2 {
		t.Fatalf("HIDIFFD_SHARED_DAEMONS=%d: want at least 2 (one is killed for good at the end)", nDaemons)
	}
	t.Logf("seed %d (replay with HIDIFFD_SHARED_SEED=%d), %d daemons, %d files, %d kills", seed, seed, nDaemons, nFiles, nKills)
	env := setupEnv(t)
	rng := rand.New(rand.NewSource(seed))
	start := time.Now()
	root := filepath.Join(env.tmp, "spool")

	ids := make([]string, nDaemons)
	ds := make([]*daemon, nDaemons)
	for i := range ds {
		ids[i] = fmt.Sprintf("d%d", i)
		dir := filepath.Join(env.tmp, ids[i])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ds[i] = &daemon{t: t, bin: env.bin, cfg: sharedConfig(t, env, root, ids[i], dir), logDir: dir}
		t.Cleanup(ds[i].kill)
	}
	inbox := ds[0].startAndWaitInbox(t, root)
	for _, d := range ds[1:] {
		d.start()
	}

	inputs := makeInputs(t, rng, nFiles, env.tmp)
	byName := map[string]*input{}
	for i := range inputs {
		byName[inputs[i].name] = &inputs[i]
	}
	// The stream comes in stages, one released as each kill starts looking
	// for a daemon that holds frames (and the rest after the last kill), so
	// that every kill finds frames to interrupt however fast the daemons
	// are; a small backlog spreads each stage out.
	var stage atomic.Int64
	stageSize := len(inputs) / (nKills + 2)
	allowed := func() int {
		if k := int(stage.Load()); k < nKills+2 {
			return k * stageSize
		}
		return len(inputs)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	dropRng := rand.New(rand.NewSource(seed + 1))
	go func() {
		defer wg.Done()
		for i, in := range inputs {
			for i >= allowed() || waiting(inbox) >= 2*nDaemons {
				time.Sleep(20 * time.Millisecond)
			}
			if err := drop(inbox, in, dropRng); err != nil {
				t.Errorf("drop %s: %v", in.name, err)
				return
			}
			time.Sleep(time.Duration(dropRng.Intn(60)) * time.Millisecond)
		}
	}()

	var takeovers []time.Duration
	selfRecovered, emptyKills := 0, 0
	alive := func(skip int) {
		for i, d := range ds {
			if i != skip {
				d.checkAlive()
			}
		}
	}
	// Kills with restarts: a daemon that holds frames is killed; it comes
	// back after a pause either shorter than the lease (it recovers its
	// own work/ at start) or longer (the others take it over first).
	for k := 1; k <= nKills; k++ {
		stage.Store(int64(k))
		i, n := killHolding(rng, ds, root, ids, 30*time.Second, func() { alive(-1) })
		killed := time.Now()
		if n == 0 {
			emptyKills++
		}
		checkTerminal(t, root, byName)
		pause := time.Duration(rng.Int63n(int64(2 * (sharedLease + sharedMargin))))
		took, ok := waitTakeover(root, ids[i], pause, func() { alive(i) })
		if ok {
			takeovers = append(takeovers, took)
		} else {
			selfRecovered++
		}
		t.Logf("kill %d: %s holding %d frames, restart after %v: %s", k, ids[i], n, pause.Round(time.Millisecond),
			map[bool]string{true: fmt.Sprintf("taken over by the others after %v", took.Round(time.Millisecond)),
				false: "not yet taken over: recovers its own work/ at start"}[ok])
		if d := time.Since(killed); d < pause {
			time.Sleep(pause - d)
		}
		ds[i].start()
		time.Sleep(time.Duration(rng.Intn(1500)) * time.Millisecond)
	}

	// One daemon dies for good while it holds frames: the others must take
	// its frames over without anyone restarting it.
	stage.Store(int64(nKills + 1))
	last, held := killHolding(rng, ds, root, ids, 30*time.Second, func() { alive(-1) })
	limit := 4 * (sharedLease + sharedMargin) // generous: a loaded machine delays sweeps
	took, ok := waitTakeover(root, ids[last], limit, func() { alive(last) })
	if !ok {
		t.Fatalf("%s killed for good holding %d frames: not taken over within %v", ids[last], held, limit)
	}
	takeovers = append(takeovers, took)
	stage.Store(int64(nKills + 2))
	wg.Wait()
	t.Logf("%s killed for good holding %d frames: taken over after %v", ids[last], held, took.Round(time.Millisecond))
	// The lease file goes once the frames have moved, a moment after the
	// folder was renamed.
	if !pollUntil(10*time.Second, func() bool {
		_, err := os.Lstat(filepath.Join(root, "leases", ids[last]))
		return os.IsNotExist(err)
	}) {
		t.Errorf("leases/%s still there 10s after the takeover", ids[last])
	}

	var final snap
	drained := pollUntil(240*time.Second, func() bool {
		alive(last)
		final = snapshot(t, root)
		// Temporary files a killed daemon left are removed once they are
		// stale (a lease after the takeover or restart): waited for too.
		return len(final.inbox) == 0 && len(final.work) == 0 && len(final.done)+len(final.failed) >= len(inputs) &&
			final.outTmp == 0 && len(final.other) == 0 && len(final.inboxDot) == 0
	})
	if !drained {
		for _, d := range ds {
			d.dumpLog()
		}
		t.Fatalf("not drained: inbox %d, work %d, done %d, failed %d of %d; temporary files: out/ %d, others %v",
			len(final.inbox), len(final.work), len(final.done), len(final.failed), len(inputs), final.outTmp, final.other)
	}
	for i, d := range ds {
		if i == last {
			continue
		}
		if code := d.sigterm(30 * time.Second); code != 0 {
			d.dumpLog()
			t.Errorf("%s exited with status %d after SIGTERM, want 0", ids[i], code)
		}
	}
	final = snapshot(t, root)
	final.checkFinal(t, root, byName)
	starts := 0
	var lf logFigures
	for _, d := range ds {
		d.checkLogs()
		starts += d.starts
		lf.add(t, d.logs)
	}
	// A live daemon is never taken over (its lock is held).
	if lf.liveTakenOver != 0 {
		t.Errorf("%d heartbeats found their own work/<id>/ taken over: a live daemon was taken over", lf.liveTakenOver)
	}
	// Each valid frame was finished exactly once, by one daemon: deblurred,
	// or found with its output complete by a recovery or takeover after a
	// kill between publishing the output and moving the original.
	for name, in := range byName {
		d, r := lf.deblurred[name], lf.recovered[name]
		if in.kind.valid() && d+r != 1 {
			t.Errorf("%s deblurred %d times and finished at recovery %d times", name, d, r)
		}
	}
	sort.Slice(takeovers, func(a, b int) bool { return takeovers[a] < takeovers[b] })
	var sum time.Duration
	for _, d := range takeovers {
		sum += d
	}
	fig := "none"
	if len(takeovers) > 0 {
		fig = fmt.Sprintf("%d, min %v, median %v, max %v, mean %v", len(takeovers),
			takeovers[0].Round(time.Millisecond), takeovers[len(takeovers)/2].Round(time.Millisecond),
			takeovers[len(takeovers)-1].Round(time.Millisecond), (sum / time.Duration(len(takeovers))).Round(time.Millisecond))
	}
	t.Logf("SHARED SPOOL: %d daemons, %d frames (done %d, failed %d, out %d), %d SIGKILLs with restarts "+
		"(%d with no frame held) + 1 for good, %d starts, %d self-recovered at restart; takeovers (lease %v, margin %v): %s; "+
		"frames re-queued at starts %d, by takeovers %d, finished by takeovers (output complete) %d; %v in all",
		nDaemons, len(inputs), len(final.done), len(final.failed), len(final.out), nKills, emptyKills, starts, selfRecovered,
		sharedLease, sharedMargin, fig, lf.requeuedAtStart, lf.requeuedByTakeover, lf.finishedByTakeover, time.Since(start).Round(time.Second))
}

// sharedConfig writes the configuration of daemon id into dir: the crash
// test's, with the instance id, the short lease and one thread per daemon
// (they share the machine's cores).
func sharedConfig(t *testing.T, e testEnv, root, id, dir string) string {
	t.Helper()
	e.cfg = filepath.Join(dir, "hidiffd.toml")
	writeConfig(t, e, root, "200ms")
	b, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "[spool]\n", fmt.Sprintf("[spool]\ninstance = %q\nlease = %q\nlease_margin = %q\n",
		id, sharedLease, sharedMargin), 1)
	s = strings.Replace(s, "[backend]\n", "[backend]\nthreads = 1\n", 1)
	if err := os.WriteFile(e.cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return e.cfg
}

// killHolding SIGKILLs one of the daemons that hold frames in their
// work/<id>/, chosen at random, as soon as one does (after timeout: any
// daemon), and returns which and how many frames it held just before.
func killHolding(rng *rand.Rand, ds []*daemon, root string, ids []string, timeout time.Duration, alive func()) (int, int) {
	deadline := time.Now().Add(timeout)
	for i := 0; time.Now().Before(deadline); i++ {
		var holders, counts []int
		for j, id := range ids {
			if n := countFrames(filepath.Join(root, "work", id)); n > 0 {
				holders, counts = append(holders, j), append(counts, n)
			}
		}
		if len(holders) > 0 {
			k := rng.Intn(len(holders))
			ds[holders[k]].sigkill()
			return holders[k], counts[k]
		}
		if i%20 == 0 {
			alive()
		}
		time.Sleep(5 * time.Millisecond)
	}
	j := rng.Intn(len(ds))
	ds[j].sigkill()
	return j, 0
}

// countFrames counts the frames in a work folder (0 if it is gone).
func countFrames(dir string) int {
	es, _ := os.ReadDir(dir)
	n := 0
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}

// waitTakeover waits up to limit for work/<id>/ to be renamed away by
// another daemon and returns how long that took.
func waitTakeover(root, id string, limit time.Duration, alive func()) (time.Duration, bool) {
	start := time.Now()
	dir := filepath.Join(root, "work", id)
	for time.Since(start) < limit {
		if _, err := os.Lstat(dir); os.IsNotExist(err) {
			return time.Since(start), true
		}
		alive()
		time.Sleep(20 * time.Millisecond)
	}
	return 0, false
}

// checkTerminal checks what can be checked while other daemons keep
// moving frames: done/ and failed/ only ever gain files, so a frame in
// both, or a name no input had, is wrong whatever the timing.
func checkTerminal(t *testing.T, root string, inputs map[string]*input) {
	t.Helper()
	s := snapshot(t, root)
	failed := set(s.failed)
	for _, n := range s.done {
		if failed[n] {
			t.Errorf("frame %s is in done/ and failed/", n)
		}
	}
	for _, names := range [][]string{s.done, s.failed, s.out} {
		for _, n := range names {
			if inputs[n] == nil {
				t.Errorf("unknown file %q (a frame run twice, or renamed?)", n)
			}
		}
	}
}

// logFigures are counted from the daemons' JSON logs.
type logFigures struct {
	deblurred, recovered                                    map[string]int
	requeuedAtStart, requeuedByTakeover, finishedByTakeover int
	liveTakenOver                                           int // heartbeats that found their own work/ taken over
}

func (f *logFigures) add(t *testing.T, paths []string) {
	if f.deblurred == nil {
		f.deblurred, f.recovered = map[string]int{}, map[string]int{}
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			var e struct {
				Message  string `json:"message"`
				Name     string `json:"name"`
				Requeued int    `json:"requeued"`
				Finished int    `json:"finished"`
				Error    string `json:"error"`
			}
			if json.Unmarshal([]byte(l), &e) != nil {
				continue
			}
			switch e.Message {
			case "deblurred":
				f.deblurred[e.Name]++
			case "finished interrupted frame: its output was complete",
				"finished interrupted frame: its output was complete; original deleted (keep_originals = false)":
				f.recovered[e.Name]++
			case "spool recovered":
				f.requeuedAtStart += e.Requeued
			case "lease heartbeat":
				if strings.Contains(e.Error, "taken over") {
					f.liveTakenOver++
				}
			case "took over an expired instance's frames":
				f.requeuedByTakeover += e.Requeued
				f.finishedByTakeover += e.Finished
			}
		}
	}
}
