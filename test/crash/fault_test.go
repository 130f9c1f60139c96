package crash

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFaultRun is the long fault run of issue 12 (`make fault-run`; skipped
// unless HIDIFFD_FAULT_RUN=1): the real binary is SIGKILLed at least 200
// times at random moments (during start-up and recovery, and while frames
// are claimed, decoded, run, written and moved) over a mixed stream in which
// a camera restarts its numbering, so most names arrive many times, while
// broken frames of every kind arrive too. After every kill, before the
// restart, the spool is checked:
//
//   - no frame is lost: every frame dropped so far is in exactly one of
//     inbox/, work/, done/, failed/ (frames are told apart by content);
//   - no output is overwritten: an out/ name, once seen, keeps its bytes;
//   - no partial file is visible: every out/ file decodes whole;
//   - nothing unknown appears in work/, done/ or failed/.
//
// At the end every valid frame is in done/ with its own output (same name,
// same size), every broken one in failed/ with its record, and out/ holds
// exactly the outputs of done/. The figures are logged.
//
// The camera keeps dropping frames while the kills go on (it stops with the
// last kill, or at HIDIFFD_FAULT_FILES frames), holding back while 20
// frames wait in inbox/, so that there is always work to interrupt.
//
// Knobs: HIDIFFD_FAULT_FILES (default 2000), HIDIFFD_FAULT_KILLS (default
// 200), HIDIFFD_FAULT_SEED, HIDIFFD_CRASH_KEEP=1 keeps the spool.
func TestFaultRun(t *testing.T) {
	if os.Getenv("HIDIFFD_FAULT_RUN") == "" {
		t.Skip("the long fault run takes about ten minutes: `make fault-run` (HIDIFFD_FAULT_RUN=1)")
	}
	env := setupEnv(t)
	nFiles := envInt(t, "HIDIFFD_FAULT_FILES", 2000)
	nKills := envInt(t, "HIDIFFD_FAULT_KILLS", 200)
	seed := int64(envInt(t, "HIDIFFD_FAULT_SEED", int(time.Now().UnixNano()%1_000_000_000)))
	t.Logf("seed %d (replay with HIDIFFD_FAULT_SEED=%d), %d files, %d kills", seed, seed, nFiles, nKills)
	rng := rand.New(rand.NewSource(seed))
	start := time.Now()

	root := filepath.Join(env.tmp, "spool")
	writeConfig(t, env, root, "100ms")
	stream := makeStream(t, rng, nFiles, env.tmp)
	d := &daemon{t: t, bin: env.bin, cfg: env.cfg, logDir: env.tmp}
	t.Cleanup(d.kill)
	inbox := d.startAndWaitInbox(t, root)

	// The producer: a camera that writes each frame in place or through a
	// dotfile and a rename, never over a frame of the same name still in
	// inbox/ (it waits for that one to be taken).
	var mu sync.Mutex
	dropped := map[string]bool{} // keys of frames completely dropped
	var wg sync.WaitGroup
	wg.Add(1)
	dropRng := rand.New(rand.NewSource(seed + 1))
	killsDone := make(chan struct{})
	go func() {
		defer wg.Done()
		for _, in := range stream {
			for waiting(inbox) >= 20 {
				select {
				case <-killsDone:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			select {
			case <-killsDone:
				return
			default:
			}
			if err := dropNoReplace(inbox, in, dropRng); err != nil {
				t.Errorf("drop %s: %v", in.name, err)
				return
			}
			mu.Lock()
			dropped[in.key] = true
			mu.Unlock()
			time.Sleep(time.Duration(dropRng.Intn(40)) * time.Millisecond)
		}
	}()

	byKey := map[string]*streamInput{}
	for i := range stream {
		byKey[stream[i].key] = &stream[i]
	}
	outs := map[string]string{} // out/ name -> content hash, once seen
	var fig figures
	for k := 1; k <= nKills; k++ {
		// Most kills land while frames move (after some progress since
		// the restart, plus a random delay); the rest at a random moment
		// of the first 1.5 s after a start (recovery, model load, warm-up).
		var wait time.Duration
		if rng.Intn(10) < 7 {
			fig.killsWorking++
			before := countFinal(root)
			pollUntil(20*time.Second, func() bool { d.checkAlive(); return countFinal(root) > before })
			wait = time.Duration(rng.Intn(800)) * time.Millisecond
		} else {
			fig.killsStart++
			wait = time.Duration(rng.Intn(1500)) * time.Millisecond
		}
		d.sleepAlive(wait)
		d.sigkill()
		mu.Lock()
		done := make(map[string]bool, len(dropped))
		for key := range dropped {
			done[key] = true
		}
		mu.Unlock()
		checkInvariants(t, root, byKey, done, outs, &fig)
		if t.Failed() {
			t.Fatalf("invariants broken after kill %d; spool kept at %s (seed %d)", k, root, seed)
		}
		if k%20 == 0 {
			s := snapshot(t, root)
			t.Logf("kill %d: inbox %d, work %d, out %d (tmp %d), done %d, failed %d; %v", k,
				len(s.inbox), len(s.work), len(s.out), s.outTmp, len(s.done), len(s.failed), time.Since(start).Round(time.Second))
		}
		d.start()
	}
	close(killsDone)
	wg.Wait()
	// From here on only the frames the camera dropped count.
	for key := range byKey {
		if !dropped[key] {
			delete(byKey, key)
		}
	}
	total := len(byKey)
	var last snap
	ok := pollUntil(15*time.Minute, func() bool {
		d.checkAlive()
		last = snapshot(t, root)
		return len(last.inbox) == 0 && len(last.work) == 0 && len(last.done)+len(last.failed) >= total
	})
	if !ok {
		d.dumpLog()
		t.Fatalf("not drained: inbox %d (%v), work %d, done %d, failed %d of %d",
			len(last.inbox), head(last.inbox, 10), len(last.work), len(last.done), len(last.failed), total)
	}
	if code := d.sigterm(60 * time.Second); code != 0 {
		d.dumpLog()
		t.Errorf("hidiffd exited with status %d after SIGTERM, want 0", code)
	}
	checkInvariants(t, root, byKey, dropped, outs, &fig)
	checkFaultFinal(t, root, byKey, outs, &fig)
	d.checkLogs()
	fig.fromLogs(d.logs)

	valid, reused := 0, 0
	names := map[string]int{}
	for _, in := range byKey {
		if in.kind.valid() {
			valid++
		}
		names[in.name]++
	}
	for _, n := range names {
		if n > 1 {
			reused += n
		}
	}
	t.Logf("FAULT RUN: %d frames (%d valid, %d broken; %d of them share a name with another), %d SIGKILLs "+
		"(%d while frames moved, %d within 1.5 s of a start), %d daemon starts, %v in all",
		total, valid, total-valid, reused, nKills, fig.killsWorking, fig.killsStart, d.starts, time.Since(start).Round(time.Second))
	t.Logf("FAULT RUN: after each kill: %d checks; lost %d, outputs overwritten %d, partial files visible %d, unknown files %d, "+
		"frames in two places %d", fig.checks, fig.lost, fig.overwritten, fig.partial, fig.unknown, fig.twice)
	t.Logf("FAULT RUN: at the end: %d in done/ with their own output, %d in failed/ with a record, %d under a numbered name, "+
		"misclassified %d, outputs without original %d", fig.doneOK, fig.failedOK, fig.renamed, fig.misclassified, fig.orphanOut)
	t.Logf("FAULT RUN: recovery: %d frames re-queued from work/, %d finished at start (output already complete), "+
		"%d temporary files removed", fig.requeued, fig.finishedAtStart, fig.tmpRemoved)
}

// figures are the fault run's counts.
type figures struct {
	killsWorking, killsStart                    int
	checks, lost, overwritten, partial, unknown int
	twice, misclassified, orphanOut             int
	doneOK, failedOK, renamed                   int
	requeued, finishedAtStart, tmpRemoved       int
}

// fromLogs adds up what the daemon said at its starts.
func (f *figures) fromLogs(logs []string) {
	count := regexp.MustCompile(`"count":(\d+)`)
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			n := 0
			if m := count.FindStringSubmatch(l); m != nil {
				n, _ = strconv.Atoi(m[1])
			}
			switch {
			case strings.Contains(l, `"message":"re-queued interrupted frames"`):
				f.requeued += n
			case strings.Contains(l, `"message":"finished interrupted frames whose output was already complete in out/"`):
				f.finishedAtStart += n
			case strings.Contains(l, `"message":"removed leftover temporary file"`):
				f.tmpRemoved++
			}
		}
	}
}

// streamInput is one frame of the fault run.
type streamInput struct {
	input
	key string // identity: content hash, or for content that repeats, kind and name
}

// keyOf is how a file in the spool is told apart (see streamInput.key).
func keyOf(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		return "link:" + target, err
	}
	if fi.Size() == 0 {
		return "zero:" + filepath.Base(path), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// makeStream builds the frames: about 70% valid, the rest broken in every
// way; valid, truncated and text frames are named like a camera that
// restarts its numbering every 40 frames (IMG_0000 ... IMG_0039, again),
// so names come back many times; empty files, huge headers and symlinks
// get names of their own (their content repeats, so the name tells them
// apart).
func makeStream(t *testing.T, rng *rand.Rand, n int, tmp string) []streamInput {
	t.Helper()
	var kinds []kind
	for _, k := range []kind{truncJPEG, truncPNG, zeroBytes, textAsJPEG, hugePNG, symlink} {
		for i := 0; i < max(1, n/20); i++ {
			kinds = append(kinds, k)
		}
	}
	for len(kinds) < n {
		kinds = append(kinds, kind(rng.Intn(2)))
	}
	kinds = kinds[:n]
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	out := make([]streamInput, n)
	counter := 0
	for i, k := range kinds {
		in := input{kind: k, inPlace: rng.Intn(2) == 1}
		ext := ".jpg"
		if k == validPNG || k == truncPNG || k == hugePNG {
			ext = ".png"
		}
		in.w, in.h = 48+rng.Intn(49), 64+rng.Intn(65)
		switch k {
		case zeroBytes, hugePNG, symlink:
			in.name = fmt.Sprintf("x%04d-%s%s", i, kindNames[k], ext)
		default:
			in.name = fmt.Sprintf("IMG_%04d%s", counter%40, ext)
			counter++
		}
		switch k {
		case validJPEG, validPNG, truncJPEG, truncPNG:
			in.data = imageBytes(t, rng, k, in.w, in.h)
		case textAsJPEG:
			in.data = []byte(fmt.Sprintf("frame %d is a text file, not a JPEG\n", i))
		case hugePNG:
			in.w, in.h = 5000+i, 5000
			in.data = hugePNGHeader(uint32(in.w), uint32(in.h))
		case symlink:
			target := filepath.Join(tmp, fmt.Sprintf("target-%d.jpg", i))
			if err := os.WriteFile(target, encodeJPEG(t, randomImage(rng, 16, 16)), 0o644); err != nil {
				t.Fatal(err)
			}
			in.data = []byte(target)
		}
		s := streamInput{input: in}
		switch k {
		case symlink:
			s.key = "link:" + string(in.data)
		case zeroBytes:
			s.key = "zero:" + in.name
		default:
			h := sha256.Sum256(in.data)
			s.key = hex.EncodeToString(h[:])
		}
		out[i] = s
	}
	return out
}

// dropNoReplace is drop for a camera that does not overwrite a frame of
// the same name still waiting in inbox/: it waits until that one is taken.
func dropNoReplace(inbox string, in streamInput, rng *rand.Rand) error {
	dst := filepath.Join(inbox, in.name)
	for {
		if _, err := os.Lstat(dst); os.IsNotExist(err) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if in.kind == symlink || in.inPlace {
		return drop(inbox, in.input, rng) // O_EXCL / symlink: never replaces
	}
	tmp := filepath.Join(inbox, "."+in.name+".tmp")
	if err := os.WriteFile(tmp, in.data, 0o644); err != nil {
		return err
	}
	for {
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if err != unix.EEXIST {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waiting is the number of frames in inbox/ (no dotfiles).
func waiting(inbox string) int {
	es, _ := os.ReadDir(inbox)
	n := 0
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}

// countFinal is the number of frames in done/ and failed/.
func countFinal(root string) int {
	n := 0
	for _, st := range []string{"done", "failed"} {
		es, _ := os.ReadDir(filepath.Join(root, st))
		for _, e := range es {
			if !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".error.json") {
				n++
			}
		}
	}
	return n
}

// checkInvariants checks the spool right after a kill (or at the end).
// mustExist holds the keys of the frames completely dropped so far.
func checkInvariants(t *testing.T, root string, byKey map[string]*streamInput, mustExist map[string]bool,
	outs map[string]string, fig *figures) {
	t.Helper()
	fig.checks++
	where := map[string][]string{}
	for _, st := range []string{"inbox", "work", "done", "failed"} {
		es, err := stateEntries(root, st)
		if err != nil {
			t.Fatalf("read %s/: %v", st, err)
		}
		for _, e := range es {
			n := e.name
			if strings.HasPrefix(n, ".") || (st == "failed" && strings.HasSuffix(n, ".error.json")) {
				continue
			}
			key, err := keyOf(e.path)
			if err != nil {
				t.Errorf("%s/%s: %v", st, n, err)
				continue
			}
			if byKey[key] == nil {
				if st == "inbox" {
					continue // being written in place by the camera
				}
				fig.unknown++
				t.Errorf("unknown file %s/%s (a frame changed, or a partial copy)", st, n)
				continue
			}
			where[key] = append(where[key], st+"/"+n)
		}
	}
	for key, places := range where {
		if len(places) > 1 {
			fig.twice++
			t.Errorf("frame %s is in %v at once", byKey[key].name, places)
		}
	}
	for key := range mustExist {
		if len(where[key]) == 0 {
			fig.lost++
			t.Errorf("frame %s (%s) is lost: in none of inbox/, work/, done/, failed/", byKey[key].name, kindNames[byKey[key].kind])
		}
	}
	es, err := os.ReadDir(filepath.Join(root, "out"))
	if err != nil {
		t.Fatalf("read out/: %v", err)
	}
	for _, e := range es {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue // a temporary output: never the final name
		}
		p := filepath.Join(root, "out", n)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("out/%s: %v", n, err)
			continue
		}
		if _, _, err := image.Decode(bytes.NewReader(b)); err != nil {
			fig.partial++
			t.Errorf("out/%s does not decode (partial?): %v", n, err)
		}
		h := sha256.Sum256(b)
		sum := hex.EncodeToString(h[:])
		if old, seen := outs[n]; seen && old != sum {
			fig.overwritten++
			t.Errorf("out/%s was overwritten", n)
		}
		outs[n] = sum
	}
}

// checkFaultFinal checks where every frame ended.
func checkFaultFinal(t *testing.T, root string, byKey map[string]*streamInput, outs map[string]string, fig *figures) {
	t.Helper()
	s := snapshot(t, root)
	if len(s.inbox)+len(s.inboxDot)+len(s.work) != 0 || s.outTmp != 0 || len(s.other) != 0 {
		t.Errorf("left over: inbox %v %v, work %v, %d temporary outputs, dotfiles %v", s.inbox, s.inboxDot, s.work, s.outTmp, s.other)
	}
	inDone := map[string]bool{}
	for _, n := range s.done {
		inDone[n] = true
		key, _ := keyOf(filepath.Join(root, "done", n))
		in := byKey[key]
		if in == nil {
			continue // reported by checkInvariants
		}
		if !in.kind.valid() {
			fig.misclassified++
			t.Errorf("%s (%s) is in done/ as %s", in.name, kindNames[in.kind], n)
			continue
		}
		if n != in.name {
			fig.renamed++
		}
		f, err := os.Open(filepath.Join(root, "out", n))
		if err != nil {
			t.Errorf("done/%s has no out/%s", n, n)
			continue
		}
		cfg, _, err := image.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width != in.w || cfg.Height != in.h {
			t.Errorf("out/%s is %dx%d (%v), its original %s is %dx%d: not its output", n, cfg.Width, cfg.Height, err, in.name, in.w, in.h)
			continue
		}
		fig.doneOK++
	}
	for _, n := range s.failed {
		key, _ := keyOf(filepath.Join(root, "failed", n))
		in := byKey[key]
		if in == nil {
			continue
		}
		if in.kind.valid() {
			fig.misclassified++
			t.Errorf("%s (valid) is in failed/ as %s: %s", in.name, n, readReason(root, n))
			continue
		}
		if n != in.name {
			fig.renamed++
		}
		b, err := os.ReadFile(filepath.Join(root, "failed", n+".error.json"))
		var r record
		if err != nil || json.Unmarshal(b, &r) != nil || r.Reason == "" || r.Stage == "" || (r.Name != in.name && r.Name != n) {
			t.Errorf("failed/%s: record missing or incomplete (%v): %s", n, err, b)
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "out", n)); err == nil {
			t.Errorf("failed/%s has an output", n)
		}
		fig.failedOK++
	}
	var orphans []string
	for n := range outs {
		if !inDone[n] {
			orphans = append(orphans, n)
		}
	}
	sort.Strings(orphans)
	fig.orphanOut = len(orphans)
	if len(orphans) > 0 {
		t.Errorf("outputs without an original in done/: %v", orphans)
	}
	if got, want := fig.doneOK+fig.failedOK, len(byKey); got != want {
		t.Errorf("%d frames accounted for at the end, want %d", got, want)
	}
}
