package spool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteBeside: a sidecar lands beside the published output under the
// output's name plus the suffix, through a temporary dotfile; it is refused
// before the output exists; a write error leaves nothing behind.
func TestWriteBeside(t *testing.T) {
	s := openTest(t, Options{KeepOriginals: true})
	drop(t, s, "a.jpg", "a")
	j, _ := s.Claim("a.jpg")
	if err := s.WriteBeside(j, ".json", writeString("{}")); !errors.Is(err, ErrNoOutput) {
		t.Fatalf("before WriteOutput: %v", err)
	}
	if err := s.WriteOutput(j, writeString("sharp")); err != nil {
		t.Fatal(err)
	}
	if j.Output != "a.jpg" {
		t.Fatalf("Output = %q", j.Output)
	}
	boom := errors.New("marshal failed")
	if err := s.WriteBeside(j, ".json", func(f *os.File) error { f.WriteString("{"); return boom }); !errors.Is(err, boom) || IsTransient(err) {
		t.Fatalf("write error: %v", err)
	}
	wantListing(t, s, "out/a.jpg", "work/a.jpg")
	if err := s.WriteBeside(j, ".json", writeString(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(s.Dir(Out), "a.jpg.json")); got != `{"ok":true}` {
		t.Fatalf("sidecar %q", got)
	}
	if err := s.Finish(j); err != nil {
		t.Fatal(err)
	}
	wantListing(t, s, "done/a.jpg", "out/a.jpg", "out/a.jpg.json")
}
