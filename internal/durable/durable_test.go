package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// entries lists a folder's names, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func writeString(s string) func(*os.File) error {
	return func(f *os.File) error {
		_, err := f.WriteString(s)
		return err
	}
}

// TestWriteLands: the content is under the final name with the mode asked
// for (less the umask), and nothing else is left in the folder, whether
// the name was free or held an older file that is replaced.
func TestWriteLands(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		name     string
		existing bool
		perm     fs.FileMode
		want     fs.FileMode
	}{
		{name: "new file", perm: 0o640, want: 0o640},
		{name: "replaces an older file", existing: true, perm: 0o666, want: 0o644},
		{name: "zero perm is 0600", perm: 0, want: 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "frame.png")
			if tc.existing {
				if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, Options{Perm: tc.perm}, writeString("sharp")); err != nil {
				t.Fatalf("Write: %v", err)
			}
			b, err := os.ReadFile(path)
			if err != nil || string(b) != "sharp" {
				t.Fatalf("content %q, %v; want %q", b, err, "sharp")
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != tc.want {
				t.Errorf("mode %v, want %v", got, tc.want)
			}
			if got := entries(t, dir); len(got) != 1 || got[0] != "frame.png" {
				t.Errorf("folder holds %q, want only frame.png", got)
			}
		})
	}
}

// TestWriteFile: the []byte form, replacing.
func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "engine.json")
	for _, content := range []string{"{}\n", `{"id":"x"}` + "\n"} {
		if err := WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Fatalf("content %q, want %q", b, content)
		}
	}
}

// TestWriteErrorsLeaveNothing: a failing write function (after writing
// part of the file), a NoReplace onto a taken name and a missing folder
// each fail with the step and the cause, leave no temporary file, and
// leave an existing file untouched.
func TestWriteErrorsLeaveNothing(t *testing.T) {
	boom := errors.New("encoder gave up")
	for _, tc := range []struct {
		name     string
		existing bool
		opts     Options
		write    func(*os.File) error
		op       Op
		cause    error
	}{
		{name: "writer fails", write: func(f *os.File) error { f.WriteString("half a frame"); return boom }, op: OpWrite, cause: boom},
		{name: "writer fails over an existing file", existing: true, write: func(f *os.File) error { return boom }, op: OpWrite, cause: boom},
		{name: "writer fails with an errno", write: func(f *os.File) error { return &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC} }, op: OpWrite, cause: syscall.ENOSPC},
		{name: "no-replace onto a taken name", existing: true, opts: Options{NoReplace: &NoReplace{}}, write: writeString("ours"), op: OpRename, cause: fs.ErrExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "frame.jpg")
			if tc.existing {
				if err := os.WriteFile(path, []byte("theirs"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := Write(path, tc.opts, tc.write)
			var de *Error
			if !errors.As(err, &de) || de.Op != tc.op || de.Path != path {
				t.Fatalf("error %#v (%v), want *Error with Op %q and Path %s", err, err, tc.op, path)
			}
			if !errors.Is(err, tc.cause) {
				t.Errorf("error %v does not wrap %v", err, tc.cause)
			}
			if de.Published() {
				t.Errorf("Published() true for a failed %s", de.Op)
			}
			want := []string(nil)
			if tc.existing {
				want = []string{"frame.jpg"}
				if b, _ := os.ReadFile(path); string(b) != "theirs" {
					t.Errorf("existing file now holds %q, want it untouched", b)
				}
			}
			if got := entries(t, dir); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("folder holds %q after the failure, want %q (no temporary file)", got, want)
			}
		})
	}

	t.Run("missing folder", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gone", "frame.jpg")
		called := false
		err := Write(path, Options{}, func(*os.File) error { called = true; return nil })
		var de *Error
		if !errors.As(err, &de) || de.Op != OpCreate || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error %v, want OpCreate wrapping fs.ErrNotExist", err)
		}
		if called {
			t.Error("write was called without a file")
		}
	})
}

// TestNoReplaceFree: NoReplace publishes under a free name, and the
// message of a taken one names the step and the path.
func TestNoReplaceFree(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.png")
	nr := &NoReplace{}
	if err := Write(path, Options{NoReplace: nr}, writeString("first")); err != nil {
		t.Fatalf("first Write: %v", err)
	}
	err := Write(path, Options{NoReplace: nr}, writeString("second"))
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "rename "+path) {
		t.Fatalf("second Write: %v, want a rename error naming %s wrapping fs.ErrExist", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Fatalf("content %q, want the first write's", b)
	}
}

// TestNoReplaceFallback: once the file system is known to lack
// RENAME_NOREPLACE (link and unlink) and also hard links (check, then
// rename), a rename still never replaces.
func TestNoReplaceFallback(t *testing.T) {
	for _, tc := range []struct {
		name    string
		noLinks bool
	}{{"link and unlink", false}, {"check then rename", true}} {
		t.Run(tc.name, func(t *testing.T) { testNoReplaceFallback(t, tc.noLinks) })
	}
}

func testNoReplaceFallback(t *testing.T, noLinks bool) {
	dir := t.TempDir()
	nr := &NoReplace{}
	nr.unsupported.Store(true)
	nr.noLinks.Store(noLinks)
	src, dst := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(src, []byte("a"), 0o600)
	os.WriteFile(dst, []byte("b"), 0o600)
	if err := nr.Rename(src, dst); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Rename onto a taken name: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "b" {
		t.Fatalf("destination replaced: %q", b)
	}
	os.Remove(dst)
	if err := nr.Rename(src, dst); err != nil {
		t.Fatalf("Rename to a free name: %v", err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source still there after the rename: %v", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "a" {
		t.Fatalf("destination %q, want the source's content", b)
	}
	if err := nr.Rename(src, filepath.Join(dir, "c")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Rename of a missing source: %v, want fs.ErrNotExist", err)
	}
}

// TestNoReplaceFallbackFolder: without RENAME_NOREPLACE a folder (which
// cannot be hard-linked) is renamed by check-then-rename, and that
// refusal does not turn the links off for the files renamed later.
func TestNoReplaceFallbackFolder(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	nr := &NoReplace{OnNoLinks: func(string) { calls++ }}
	nr.unsupported.Store(true)
	src, dst := filepath.Join(dir, "work-a"), filepath.Join(dir, "taken")
	os.Mkdir(src, 0o700)
	os.WriteFile(filepath.Join(src, "frame.jpg"), []byte("x"), 0o600)
	if err := nr.Rename(src, dst); err != nil {
		t.Fatalf("folder rename: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "frame.jpg")); err != nil {
		t.Fatalf("folder not renamed: %v", err)
	}
	if nr.noLinks.Load() || calls != 0 {
		t.Fatalf("a folder's EPERM turned the links off (noLinks %v, OnNoLinks calls %d)", nr.noLinks.Load(), calls)
	}
}

// TestLinkUnlinkRepeatedLink: NFS answers a repeated link request with
// EEXIST when the first one made dst; dst being src's own second name, the
// rename goes on and completes instead of leaving the file under two names.
func TestLinkUnlinkRepeatedLink(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "frame"), filepath.Join(dir, "claim")
	os.WriteFile(src, []byte("x"), 0o600)
	if err := os.Link(src, dst); err != nil { // the first, unanswered link
		t.Fatal(err)
	}
	if err := linkUnlink(src, dst); err != nil {
		t.Fatalf("linkUnlink after its own link: %v", err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source still there: %v", err)
	}
	// A different file at dst is taken, and stays.
	os.WriteFile(src, []byte("new"), 0o600)
	if err := linkUnlink(src, dst); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("onto another file: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "x" {
		t.Fatalf("dst replaced: %q", b)
	}
}

// TestLinkUnlinkRace: many renamers of one source onto different free
// names (daemons on NFS claiming one inbox file): exactly one wins, the
// file ends under exactly one name, and the losers see fs.ErrNotExist.
func TestLinkUnlinkRace(t *testing.T) {
	for round := range 50 {
		dir := t.TempDir()
		src := filepath.Join(dir, "frame")
		os.WriteFile(src, []byte("x"), 0o600)
		const n = 8
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- linkUnlink(src, filepath.Join(dir, fmt.Sprintf("claim%d", i))) }()
		}
		wins := 0
		for range n {
			err := <-errs
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, fs.ErrNotExist):
				t.Fatalf("round %d: a losing renamer got %v, want fs.ErrNotExist", round, err)
			}
		}
		left, _ := os.ReadDir(dir)
		if wins != 1 || len(left) != 1 {
			t.Fatalf("round %d: %d winners, %d names left, want 1 and 1", round, wins, len(left))
		}
	}
}

// TestSyncDir: a folder syncs; a missing one is an error, not ignored.
func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Fatalf("SyncDir: %v", err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SyncDir of a missing folder: %v, want fs.ErrNotExist", err)
	}
}

// TestTempNames: temporary names are dotfiles with the marker, and a
// 255-byte name still gets a temporary name that fits NAME_MAX.
func TestTempNames(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 251) + ".png"
	seen := ""
	err := Write(filepath.Join(dir, long), Options{}, func(f *os.File) error {
		seen = filepath.Base(f.Name())
		return nil
	})
	if err != nil {
		t.Fatalf("Write with a 255-byte name: %v", err)
	}
	if !IsTemp(seen) || len(seen) > 255 {
		t.Errorf("temporary name %q (%d bytes): want a dotfile with %q within 255 bytes", seen, len(seen), TempMarker)
	}
	for _, n := range []string{"frame.jpg", ".frame.jpg", "frame.jpg" + TempMarker + "00"} {
		if IsTemp(n) {
			t.Errorf("IsTemp(%q) = true", n)
		}
	}
}
