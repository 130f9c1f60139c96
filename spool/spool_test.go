package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func openTest(t *testing.T, opts Options) *Spool {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "spool"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func drop(t *testing.T, s *Spool, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Dir(Inbox), name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// listing returns "state/name" for every entry of every state folder.
func listing(t *testing.T, s *Spool) []string {
	t.Helper()
	var out []string
	for _, st := range States {
		es, err := os.ReadDir(s.Dir(st))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			out = append(out, st+"/"+e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func wantListing(t *testing.T, s *Spool, want ...string) {
	t.Helper()
	sort.Strings(want)
	got := listing(t, s)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("spool holds\n  %v\nwant\n  %v", got, want)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeString(content string) func(f *os.File) error {
	return func(f *os.File) error {
		_, err := f.WriteString(content)
		return err
	}
}

func TestOpenCreatesFolders(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "spool")
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range States {
		fi, err := os.Stat(filepath.Join(root, st))
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v", st, err)
		}
		want := filepath.Join(root, st)
		if st == Work {
			want = filepath.Join(root, Work, s.Instance()) // this instance's own
		}
		if s.Dir(st) != want {
			t.Fatalf("Dir(%q) = %q, want %q", st, s.Dir(st), want)
		}
		if perm := fi.Mode().Perm(); perm&^0o750 != 0 {
			t.Errorf("%s/ mode %v, want at most 0750", st, perm)
		}
	}
	if s.Dir("nope") != "" {
		t.Error("unknown state should give an empty path")
	}
	// Reopening an existing spool is the normal start; no probe is left.
	if _, err := Open(root, Options{}); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s)
}

func TestOpenRejectsFileAsFolder(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "out"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(root, Options{})
	if err == nil || !strings.Contains(err.Error(), "out/") {
		t.Fatalf("want an error naming out/, got %v", err)
	}
}

// mountTmpfs mounts a tmpfs of the given size at dir, or skips the test where
// mounting is not allowed (not root, no CAP_SYS_ADMIN in the container).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v)", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

func TestOpenRejectsSecondFilesystem(t *testing.T) {
	root := t.TempDir()
	mountTmpfs(t, filepath.Join(root, "done"), "64k")
	_, err := Open(root, Options{})
	if err == nil || !strings.Contains(err.Error(), "done/") || !strings.Contains(err.Error(), "filesystem") {
		t.Fatalf("want a filesystem error naming done/, got %v", err)
	}
}

func TestLock(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, Options{Lock: true}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second locked Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(root, Options{Lock: true})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestClaimWriteFinishKeep(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	drop(t, s, "a.jpg", "blurry")
	j, err := s.Claim("a.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if j.Name != "a.jpg" || j.Path != filepath.Join(s.Dir(Work), "a.jpg") {
		t.Fatalf("job %+v", j)
	}
	wantListing(t, s, "work/a.jpg")
	if err := s.Finish(j); !errors.Is(err, ErrNoOutput) {
		t.Fatalf("Finish before WriteOutput: %v", err)
	}
	if err := s.WriteOutput(j, func(f *os.File) error {
		// While writing, only the temporary name exists in out/.
		es, _ := os.ReadDir(s.Dir(Out))
		if len(es) != 1 || !IsTempName(es[0].Name()) {
			return fmt.Errorf("out/ during write: %v", es)
		}
		_, err := f.WriteString("sharp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "work/a.jpg", "out/a.jpg")
	if err := s.Finish(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "done/a.jpg", "out/a.jpg")
	if got := readFile(t, filepath.Join(s.Dir(Out), "a.jpg")); got != "sharp" {
		t.Fatalf("output %q", got)
	}
	if got := readFile(t, filepath.Join(s.Dir(Done), "a.jpg")); got != "blurry" {
		t.Fatalf("original %q", got)
	}
	fi, _ := os.Stat(filepath.Join(s.Dir(Out), "a.jpg"))
	if fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("output mode %v is world-accessible", fi.Mode())
	}
}

func TestFinishDelete(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: false})
	drop(t, s, "a.png", "x")
	j, err := s.Claim("a.png")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteOutput(j, writeString("y")); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "out/a.png")
}

// TestSameNameKeepsEveryOutput: a name that comes back (a camera restarting
// its numbering) takes the next free name at the claim, and its output and
// original keep that name: nothing in out/ is replaced, and out/X is the
// output of done/X. With keep_originals off, out/ alone tells which names
// are taken.
func TestSameNameKeepsEveryOutput(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("keep_originals=%v", keep), func(t *testing.T) {
			s := openTest(t, Options{KeepOriginals: keep})
			var logged []string
			s.opts.Log = func(level, msg string, kv ...any) { logged = append(logged, msg) }
			for i, content := range []string{"first", "second", "third"} {
				drop(t, s, "f.jpg", content)
				j, err := s.Claim("f.jpg")
				if err != nil {
					t.Fatal(err)
				}
				want := []string{"f.jpg", "f.1.jpg", "f.2.jpg"}[i]
				if j.Name != want || j.Arrived != "f.jpg" {
					t.Fatalf("claimed as %q (arrived %q), want %s", j.Name, j.Arrived, want)
				}
				if err := s.WriteOutput(j, writeString("out-"+content)); err != nil {
					t.Fatal(err)
				}
				if err := s.Finish(j); err != nil {
					t.Fatal(err)
				}
			}
			if keep {
				wantListing(t, s, "done/f.jpg", "done/f.1.jpg", "done/f.2.jpg", "out/f.jpg", "out/f.1.jpg", "out/f.2.jpg")
				if got := readFile(t, filepath.Join(s.Dir(Done), "f.2.jpg")); got != "third" {
					t.Fatalf("done/f.2.jpg = %q", got)
				}
			} else {
				wantListing(t, s, "out/f.jpg", "out/f.1.jpg", "out/f.2.jpg")
			}
			for i, n := range []string{"f.jpg", "f.1.jpg", "f.2.jpg"} {
				want := "out-" + []string{"first", "second", "third"}[i]
				if got := readFile(t, filepath.Join(s.Dir(Out), n)); got != want {
					t.Fatalf("out/%s = %q, want %q", n, got, want)
				}
			}
			if n := strings.Count(strings.Join(logged, "\n"), "name taken by an earlier frame"); n != 2 {
				t.Errorf("want the two renames logged, got %q", logged)
			}
		})
	}
}

// TestWriteOutputNeverReplaces: a file put into out/ behind the daemon's
// back after the claim is not replaced; the job learns ErrOutputExists.
func TestWriteOutputNeverReplaces(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	drop(t, s, "a.jpg", "a")
	j, err := s.Claim("a.jpg")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir(Out), "a.jpg"), []byte("someone else's"), 0o644)
	err = s.WriteOutput(j, writeString("ours"))
	if !errors.Is(err, ErrOutputExists) || IsTransient(err) {
		t.Fatalf("WriteOutput over a foreign file: %v", err)
	}
	if got := readFile(t, filepath.Join(s.Dir(Out), "a.jpg")); got != "someone else's" {
		t.Fatalf("out/a.jpg = %q", got)
	}
	// Released, the frame's next claim takes a free name.
	if err := s.Release(j); err != nil {
		t.Fatal(err)
	}
	j, err = s.Claim("a.jpg")
	if err != nil || j.Name != "a.1.jpg" {
		t.Fatalf("reclaim: %+v %v", j, err)
	}
}

// TestUnpublish: an output taken back before a retry leaves out/ as before.
func TestUnpublish(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	drop(t, s, "a.jpg", "a")
	j, _ := s.Claim("a.jpg")
	if err := s.Unpublish(j); err != nil { // nothing written: nothing to do
		t.Fatal(err)
	}
	if err := s.WriteOutput(j, writeString("A")); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpublish(j); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(j); !errors.Is(err, ErrNoOutput) {
		t.Fatalf("Finish after Unpublish: %v", err)
	}
	if err := s.Release(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "inbox/a.jpg")
	// The retry gets the same name back.
	if j, err := s.Claim("a.jpg"); err != nil || j.Name != "a.jpg" {
		t.Fatalf("reclaim: %+v %v", j, err)
	}
}

// TestUnpublishFinishedElsewhere: a sweeper took this instance over, found
// the frame's output complete and finished it; this daemon's Unpublish
// (its sidecar failed) must not delete that frame's one output.
func TestUnpublishFinishedElsewhere(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	drop(t, s, "a.jpg", "a")
	j, err := s.Claim("a.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteOutput(j, writeString("A")); err != nil {
		t.Fatal(err)
	}
	// What the sweeper's recovery did: the original to done/.
	if err := os.Rename(j.Path, filepath.Join(s.Dir(Done), j.Name)); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpublish(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "done/a.jpg", "out/a.jpg")
}

func TestClaimGoneAndSameName(t *testing.T) {
	s := openTest(t, Options{})
	if _, err := s.Claim("missing.jpg"); !errors.Is(err, ErrGone) {
		t.Fatalf("claim missing: %v", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b"} {
		t.Run(fmt.Sprintf("%q", bad), func(t *testing.T) {
			if _, err := s.Claim(bad); !errors.Is(err, ErrBadName) {
				t.Fatalf("claim %q: %v", bad, err)
			}
		})
	}
	drop(t, s, "x.jpg", "one")
	j, err := s.Claim("x.jpg")
	if err != nil {
		t.Fatal(err)
	}
	// Same name dropped again while the first is in work/: the claim must
	// not overwrite work/x.jpg; the second frame takes the next free name.
	drop(t, s, "x.jpg", "two")
	j2, err := s.Claim("x.jpg")
	if err != nil || j2.Name != "x.1.jpg" || j2.Arrived != "x.jpg" {
		t.Fatalf("second claim: %+v %v", j2, err)
	}
	wantListing(t, s, "work/x.jpg", "work/x.1.jpg")
	if got := readFile(t, j.Path); got != "one" {
		t.Fatalf("work/x.jpg = %q", got)
	}
	if got := readFile(t, j2.Path); got != "two" {
		t.Fatalf("work/x.1.jpg = %q", got)
	}
}

func TestConcurrentClaimOneWinner(t *testing.T) {
	s := openTest(t, Options{})
	for round := 0; round < 20; round++ {
		name := fmt.Sprintf("r%d.jpg", round)
		drop(t, s, name, "x")
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, gones := 0, 0
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Claim(name)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrGone):
					gones++
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || gones != 3 {
			t.Fatalf("round %d: %d wins, %d gone", round, wins, gones)
		}
	}
}

func readRecord(t *testing.T, p string) ErrorRecord {
	t.Helper()
	var rec ErrorRecord
	if err := json.Unmarshal([]byte(readFile(t, p)), &rec); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return rec
}

func TestFail(t *testing.T) {
	s := openTest(t, Options{})
	drop(t, s, "bad.jpg", "not a jpeg")
	j, err := s.Claim("bad.jpg")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := s.Fail(j, "decode", "image: unknown format"); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "failed/bad.jpg", "failed/bad.jpg.error.json")
	rec := readRecord(t, filepath.Join(s.Dir(Failed), "bad.jpg.error.json"))
	if rec.Name != "bad.jpg" || rec.Stage != "decode" || rec.Reason != "image: unknown format" ||
		rec.Size != int64(len("not a jpeg")) || rec.File != "" || rec.Type != "" {
		t.Fatalf("record %+v", rec)
	}
	ts, err := time.Parse(time.RFC3339Nano, rec.Time)
	if err != nil || ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		t.Fatalf("time %q: %v", rec.Time, err)
	}
	// The raw JSON has exactly the documented keys for a regular file.
	var raw map[string]any
	json.Unmarshal([]byte(readFile(t, filepath.Join(s.Dir(Failed), "bad.jpg.error.json"))), &raw)
	for _, k := range []string{"name", "reason", "stage", "time", "size"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("record lacks %q: %v", k, raw)
		}
	}

	// Same name again: kept beside the first, the record says so.
	drop(t, s, "bad.jpg", "also bad")
	j2, err := s.Claim("bad.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(j2, "decode", "second"); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "failed/bad.jpg", "failed/bad.jpg.error.json", "failed/bad.1.jpg", "failed/bad.1.jpg.error.json")
	rec2 := readRecord(t, filepath.Join(s.Dir(Failed), "bad.1.jpg.error.json"))
	if rec2.Name != "bad.jpg" || rec2.File != "bad.1.jpg" || rec2.Reason != "second" {
		t.Fatalf("record %+v", rec2)
	}
	if got := readFile(t, filepath.Join(s.Dir(Failed), "bad.1.jpg")); got != "also bad" {
		t.Fatalf("failed/bad.1.jpg = %q", got)
	}
}

// A frame literally named like an error record must not collide with the
// record of another frame.
func TestFailNameLikeRecord(t *testing.T) {
	s := openTest(t, Options{})
	drop(t, s, "x.jpg.error.json", "{}")
	j, err := s.Claim("x.jpg.error.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(j, "decode", "json is no image"); err != nil {
		t.Fatal(err)
	}
	drop(t, s, "x.jpg", "bad")
	j, err = s.Claim("x.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(j, "decode", "bad"); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "failed/x.jpg", "failed/x.jpg.error.json",
		"failed/x.jpg.error.1.json", "failed/x.jpg.error.1.json.error.json")
}

// Crash between writing the record and moving the frame: the next Fail
// overwrites the stale record; Recover removes an orphan one.
func TestFailOverwritesStaleRecord(t *testing.T) {
	s := openTest(t, Options{})
	stale := filepath.Join(s.Dir(Failed), "c.jpg.error.json")
	os.WriteFile(stale, []byte(`{"name":"c.jpg","reason":"old"}`), 0o640)
	drop(t, s, "c.jpg", "zz")
	j, _ := s.Claim("c.jpg")
	if err := s.Fail(j, "decode", "new"); err != nil {
		t.Fatal(err)
	}
	if rec := readRecord(t, stale); rec.Reason != "new" {
		t.Fatalf("record %+v", rec)
	}
	wantListing(t, s, "failed/c.jpg", "failed/c.jpg.error.json")
}

// Entries that are not regular files (delivered by intake at once, to be
// failed) are claimed and failed as they are: rename(2) moves symlinks,
// fifos and folders without opening them, and the record says what they were.
func TestFailSpecialFiles(t *testing.T) {
	s := openTest(t, Options{})
	in := s.Dir(Inbox)
	target := filepath.Join(t.TempDir(), "target.jpg")
	os.WriteFile(target, []byte("outside"), 0o644)
	if err := os.Symlink(target, filepath.Join(in, "link.jpg")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(in, "pipe.jpg"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(in, "dir.jpg"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(in, "dir.jpg", "inner"), []byte("x"), 0o644)
	for _, c := range []struct{ name, typ string }{{"link.jpg", "symlink"}, {"pipe.jpg", "fifo"}, {"dir.jpg", "dir"}} {
		t.Run(c.name, func(t *testing.T) {
			j, err := s.Claim(c.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Fail(j, "probe", "not a regular file"); err != nil {
				t.Fatal(err)
			}
			rec := readRecord(t, filepath.Join(s.Dir(Failed), c.name+ErrorSuffix))
			if rec.Type != c.typ || rec.Stage != "probe" || rec.Name != c.name {
				t.Errorf("record %+v, want type %q stage probe", rec, c.typ)
			}
		})
	}
	wantListing(t, s, "failed/link.jpg", "failed/link.jpg.error.json", "failed/pipe.jpg",
		"failed/pipe.jpg.error.json", "failed/dir.jpg", "failed/dir.jpg.error.json")
	// The symlink moved as a link; its target was not touched.
	if l, err := os.Readlink(filepath.Join(s.Dir(Failed), "link.jpg")); err != nil || l != target {
		t.Fatalf("readlink: %q %v", l, err)
	}
	if readFile(t, target) != "outside" {
		t.Fatal("symlink target changed")
	}
	if err := s.Fail(&Job{Name: "nothing.jpg"}, "probe", "x"); !errors.Is(err, ErrGone) {
		t.Fatalf("Fail of a missing file: %v", err)
	}
}

func TestRelease(t *testing.T) {
	s := openTest(t, Options{})
	drop(t, s, "r.jpg", "one")
	j, _ := s.Claim("r.jpg")
	if err := s.Release(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "inbox/r.jpg")
	// Released while a newer r.jpg arrived: both stay in inbox/.
	j, _ = s.Claim("r.jpg")
	drop(t, s, "r.jpg", "two")
	if err := s.Release(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "inbox/r.jpg", "inbox/r.1.jpg")
	if readFile(t, filepath.Join(s.Dir(Inbox), "r.1.jpg")) != "one" || j.Path != filepath.Join(s.Dir(Inbox), "r.1.jpg") {
		t.Fatal("released frame lost or misnamed")
	}
}

func TestRecoverCrashStates(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	w, o, f, in := s.Dir(Work), s.Dir(Out), s.Dir(Failed), s.Dir(Inbox)
	// Crash after claim: frame in work/.
	os.WriteFile(filepath.Join(w, "a.jpg"), []byte("a"), 0o640)
	// Crash after the output was published but before Finish.
	os.WriteFile(filepath.Join(w, "b.jpg"), []byte("b"), 0o640)
	os.WriteFile(filepath.Join(o, "b.jpg"), []byte("B"), 0o640)
	// A spool of an older hidiffd: work/g.jpg was claimed after out/g.jpg
	// (another frame's output) was written, so it is not g.jpg's output.
	// Its mtime says nothing (output.keep_mtime gives outputs the
	// original's); the ctimes do.
	os.WriteFile(filepath.Join(o, "g.jpg"), []byte("G-old"), 0o640)
	laterCtime(t, filepath.Join(o, "g.jpg"), filepath.Join(w, "g.jpg"), "g")
	// b.jpg's output keeps its original's (old) mtime: still its own.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(o, "b.jpg"), old, old)
	// Crash while writing an output: temp file in out/.
	os.WriteFile(filepath.Join(o, ".c.jpg"+tmpMarker+"0badf00d"), []byte("half"), 0o640)
	// Crash between error record and moving the frame.
	os.WriteFile(filepath.Join(w, "d.jpg"), []byte("d"), 0o640)
	os.WriteFile(filepath.Join(f, "d.jpg.error.json"), []byte("{}"), 0o640)
	os.WriteFile(filepath.Join(f, ".d.jpg.error.json"+tmpMarker+"12345678"), []byte("{"), 0o640)
	// A healthy failed frame keeps its record.
	os.WriteFile(filepath.Join(f, "e.jpg"), []byte("e"), 0o640)
	os.WriteFile(filepath.Join(f, "e.jpg.error.json"), []byte("{}"), 0o640)
	// A newer a.jpg arrived while the old one was in work/.
	os.WriteFile(filepath.Join(in, "a.jpg"), []byte("newer"), 0o640)
	// A probe left by a crash inside Open.
	os.WriteFile(filepath.Join(in, probePrefix+"1-aa"), nil, 0o640)

	n, err := s.Recover()
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("requeued %d, want 3", n)
	}
	// b.jpg had its output: finished, not re-queued (a second run would
	// give it a second output).
	wantListing(t, s, "inbox/a.jpg", "inbox/a.1.jpg", "done/b.jpg", "inbox/d.jpg", "out/b.jpg",
		"inbox/g.jpg", "out/g.jpg", "failed/e.jpg", "failed/e.jpg.error.json")
	if readFile(t, filepath.Join(in, "a.jpg")) != "newer" || readFile(t, filepath.Join(in, "a.1.jpg")) != "a" {
		t.Fatal("requeue mixed up a.jpg")
	}
	if readFile(t, filepath.Join(o, "b.jpg")) != "B" || readFile(t, filepath.Join(s.Dir(Done), "b.jpg")) != "b" {
		t.Fatal("b.jpg and its output changed")
	}
	// g.jpg runs again and takes a free name: the old output stays.
	j, err := s.Claim("g.jpg")
	if err != nil || j.Name != "g.1.jpg" {
		t.Fatalf("claim g.jpg: %+v %v", j, err)
	}
	if readFile(t, filepath.Join(o, "g.jpg")) != "G-old" {
		t.Fatal("old output replaced")
	}
	if err := s.Release(j); err != nil {
		t.Fatal(err)
	}
	// Recover on a clean spool does nothing.
	if n, err := s.Recover(); n != 0 || err != nil {
		t.Fatalf("second Recover: %d %v", n, err)
	}
}

// laterCtime writes path with content once a new file's ctime is later
// than ref's (file times move in clock ticks of a few milliseconds).
func laterCtime(t *testing.T, ref, path, content string) {
	t.Helper()
	ctime := func(p string) time.Time {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return time.Unix(fi.Sys().(*syscall.Stat_t).Ctim.Unix())
	}
	for {
		if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		if ctime(path).After(ctime(ref)) {
			return
		}
		os.Remove(path)
	}
}

func TestWriteOutputCallbackError(t *testing.T) {
	s := openTest(t, Options{})
	drop(t, s, "a.jpg", "a")
	j, _ := s.Claim("a.jpg")
	boom := errors.New("encoder exploded")
	err := s.WriteOutput(j, func(f *os.File) error {
		f.WriteString("partial")
		return boom
	})
	if !errors.Is(err, boom) || IsTransient(err) {
		t.Fatalf("err %v transient=%v", err, IsTransient(err))
	}
	wantListing(t, s, "work/a.jpg")
	if err := s.Finish(j); !errors.Is(err, ErrNoOutput) {
		t.Fatalf("Finish after failed write: %v", err)
	}
}

// out/ replaced by a regular file: every write fails (ENOTDIR), which the
// daemon must treat as the environment's fault and keep the original. This
// works as root, where chmod cannot make a folder unwritable.
func TestWriteOutputOutNotADirectory(t *testing.T) {
	s := openTest(t, Options{})
	drop(t, s, "a.jpg", "a")
	j, _ := s.Claim("a.jpg")
	out := s.Dir(Out)
	os.Remove(out)
	os.WriteFile(out, []byte("oops"), 0o640)
	err := s.WriteOutput(j, writeString("sharp"))
	if err == nil || !IsTransient(err) {
		t.Fatalf("err %v transient=%v", err, IsTransient(err))
	}
	if readFile(t, j.Path) != "a" {
		t.Fatal("original changed")
	}
	// Operator fixes it; the retry works.
	os.Remove(out)
	os.Mkdir(out, 0o750)
	if err := s.WriteOutput(j, writeString("sharp")); err != nil {
		t.Fatal(err)
	}
}

func TestWriteOutputReadOnlyFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores folder permissions; covered by the ENOTDIR and tmpfs tests")
	}
	s := openTest(t, Options{})
	drop(t, s, "a.jpg", "a")
	j, _ := s.Claim("a.jpg")
	os.Chmod(s.Dir(Out), 0o500)
	defer os.Chmod(s.Dir(Out), 0o750)
	err := s.WriteOutput(j, writeString("sharp"))
	if !errors.Is(err, fs.ErrPermission) || !IsTransient(err) {
		t.Fatalf("err %v transient=%v", err, IsTransient(err))
	}
	wantListing(t, s, "work/a.jpg")
}

// A spool on a tiny tmpfs: a large output hits ENOSPC, a read-only remount
// gives EROFS. Both are transient and leave no temporary file behind.
func TestWriteOutputDiskFullAndReadOnly(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	mountTmpfs(t, root, "256k")
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	drop(t, s, "big.jpg", "a")
	j, _ := s.Claim("big.jpg")
	big := strings.Repeat("x", 1<<20)
	err = s.WriteOutput(j, writeString(big))
	if !errors.Is(err, syscall.ENOSPC) || !IsTransient(err) {
		t.Fatalf("disk full: err %v transient=%v", err, IsTransient(err))
	}
	wantListing(t, s, "work/big.jpg")

	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount read-only: %v", err)
	}
	defer unix.Mount("", root, "", unix.MS_REMOUNT, "")
	err = s.WriteOutput(j, writeString("small"))
	if !errors.Is(err, syscall.EROFS) || !IsTransient(err) {
		t.Fatalf("read-only: err %v transient=%v", err, IsTransient(err))
	}
	if _, err := Open(root, Options{}); err == nil || !strings.Contains(err.Error(), "inbox/") {
		t.Fatalf("Open on a read-only spool: %v", err)
	}
}

// TestTransientClassification pins the one errno classification both the
// output side (IsTransient) and the daemon's reading of a frame
// (IsTransientRead) use: which errors keep the original for a retry and
// which fail the frame.
func TestTransientClassification(t *testing.T) {
	wrap := func(e syscall.Errno) error {
		return fmt.Errorf("encode: %w", &fs.PathError{Op: "write", Path: "/x", Err: e})
	}
	cases := []struct {
		name        string
		err         error
		write, read bool
	}{
		{"ENOSPC disk full", wrap(syscall.ENOSPC), true, false},
		{"EDQUOT quota", wrap(syscall.EDQUOT), true, false},
		{"EROFS read-only", wrap(syscall.EROFS), true, false},
		{"EACCES permission", wrap(syscall.EACCES), true, false},
		{"EPERM immutable", wrap(syscall.EPERM), true, false},
		{"EBUSY mount busy", wrap(syscall.EBUSY), true, false},
		{"EIO device", wrap(syscall.EIO), true, true},
		{"EMFILE descriptors", wrap(syscall.EMFILE), true, true},
		{"ENFILE file table", wrap(syscall.ENFILE), true, true},
		{"ENOMEM kernel memory", wrap(syscall.ENOMEM), true, true},
		{"EAGAIN", wrap(syscall.EAGAIN), true, true},
		{"EINTR", wrap(syscall.EINTR), true, true},
		{"ETIMEDOUT nfs", wrap(syscall.ETIMEDOUT), true, true},
		{"ESTALE nfs", wrap(syscall.ESTALE), true, true},
		{"EINVAL", wrap(syscall.EINVAL), false, false},
		{"ENOENT", wrap(syscall.ENOENT), false, false},
		{"nil", nil, false, false},
		{"plain error", errors.New("unexpected EOF"), false, false},
		{"ErrGone", ErrGone, false, false},
		{"ErrBadName", ErrBadName, false, false},
		// The spool's own filesystem steps are never the frame's fault,
		// whatever the errno; a read never goes through them.
		{"marked by the spool", transient(errors.New("any")), true, false},
		{"marked ENOENT", transient(wrap(syscall.ENOENT)), true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := IsTransient(c.err); got != c.write {
				t.Errorf("IsTransient(%v) = %v, want %v", c.err, got, c.write)
			}
			if got := IsTransientRead(c.err); got != c.read {
				t.Errorf("IsTransientRead(%v) = %v, want %v", c.err, got, c.read)
			}
		})
	}
	// Every errno of the list is in the table above, so a new one cannot be
	// added without saying how it is classified.
	for _, e := range transientErrnos {
		found := false
		for _, c := range cases {
			found = found || errors.Is(c.err, e.errno) && !errors.As(c.err, new(*transientError))
		}
		if !found {
			t.Errorf("%v is in transientErrnos but not in this test's table", e.errno)
		}
	}
}

func TestSuffixed(t *testing.T) {
	for _, c := range []struct {
		name string
		i    int
		want string
	}{
		{"a.jpg", 0, "a.jpg"}, {"a.jpg", 1, "a.1.jpg"}, {"a", 2, "a.2"}, {"a.tar.gz", 3, "a.tar.3.gz"}, {".x", 1, ".x.1"},
	} {
		t.Run(fmt.Sprintf("%s,%d", c.name, c.i), func(t *testing.T) {
			if got := suffixed(c.name, c.i); got != c.want {
				t.Errorf("suffixed(%q,%d) = %q, want %q", c.name, c.i, got, c.want)
			}
		})
	}
}

// Names near NAME_MAX: the claim shortens a name so that its error record
// fits (the extension kept), the temporary name is shortened, and a
// returning long name takes numbered names of the same length. The log
// says "shortened", not "taken", for the first.
func TestLongNames(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	var logged []string
	s.opts.Log = func(level, msg string, kv ...any) { logged = append(logged, msg) }
	name := strings.Repeat("n", 251) + ".jpg" // 255 bytes
	short := strings.Repeat("n", 240) + ".jpg"
	short1 := strings.Repeat("n", 238) + ".1.jpg"
	short2 := strings.Repeat("n", 238) + ".2.jpg"
	for round := 0; round < 2; round++ {
		drop(t, s, name, "x")
		j, err := s.Claim(name)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{short, short1}[round]; j.Name != want || j.Arrived != name {
			t.Fatalf("round %d: claimed as %q", round, j.Name)
		}
		if err := s.WriteOutput(j, writeString("y")); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(j); err != nil {
			t.Fatal(err)
		}
	}
	drop(t, s, name, "z")
	j, _ := s.Claim(name)
	if err := s.Fail(j, "decode", "bad"); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "done/"+short, "done/"+short1, "out/"+short, "out/"+short1,
		"failed/"+short2, "failed/"+short2+ErrorSuffix)
	rec := readRecord(t, filepath.Join(s.Dir(Failed), short2+ErrorSuffix))
	if rec.Name != name || rec.File != short2 {
		t.Fatalf("record %+v", rec)
	}
	if logged[0] != "long name shortened so that NAME.error.json fits the 255-byte limit" ||
		!strings.HasPrefix(logged[1], "name taken by an earlier frame") {
		t.Errorf("log: %q", logged)
	}
	for _, m := range logged {
		if strings.Contains(m, "already holds") {
			t.Errorf("misleading log line: %q", m)
		}
	}
}

// TestNestedSpoolRefused: a second spool root inside the first one's done/
// (or any of its folders) is refused before a folder is created there, and
// so is a root whose folders already hold a spool.
func TestNestedSpoolRefused(t *testing.T) {
	outer := openTest(t, Options{Lock: true})
	inner := filepath.Join(outer.Dir(Done), "second")
	_, err := Open(inner, Options{Lock: true})
	if err == nil || !strings.Contains(err.Error(), "is inside the spool "+outer.Root()) {
		t.Fatalf("nested root: %v", err)
	}
	if _, serr := os.Stat(inner); !errors.Is(serr, fs.ErrNotExist) {
		t.Errorf("the refused root was created: %v", serr)
	}
	// The other way round: a spool already inside inbox/ of a new root.
	root := filepath.Join(t.TempDir(), "outer")
	in, err := Open(filepath.Join(root, Inbox, "sub"), Options{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	if _, err := Open(root, Options{}); err == nil || !strings.Contains(err.Error(), "holds another spool in inbox/sub") {
		t.Fatalf("root holding a spool: %v", err)
	}
}
