package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hidiffd/config"
	"hidiffd/deblur"
)

// sharedSpool is the [spool] table of a daemon with instance id on the
// spool of the test folder.
func sharedSpool(id string) string {
	return fmt.Sprintf("[spool]\nroot = \"spool\"\nsettle = \"50ms\"\nrescan = \"200ms\"\nqueue_size = 4\n"+
		"instance = %q\nlease = \"2s\"\nlease_margin = \"1s\"\n", id)
}

// TestTwoDaemonsOneSpool: two daemons with their own ids share a spool;
// every frame is deblurred exactly once (one "deblurred" line in all the
// logs together, one output), both take part, and each daemon's work
// folder is its own. Daemon a's first frame waits until b has deblurred
// one, so that b always gets frames however fast a claims them.
func TestTwoDaemonsOneSpool(t *testing.T) {
	dir := t.TempDir()
	bWorked := make(chan struct{})
	var once sync.Once
	aBackend := &fakeBackend{onTransform: func(ctx context.Context) error {
		select {
		case <-bWorked:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	bBackend := &fakeBackend{onTransform: func(context.Context) error {
		once.Do(func() { close(bWorked) })
		return nil
	}}
	a := start(t, setup{dir: dir, toml: sharedSpool("a"), backend: aBackend})
	b := start(t, setup{dir: dir, toml: sharedSpool("b"), backend: bBackend})
	a.waitReady()
	b.waitReady()
	const n = 16
	for i := range n {
		a.drop(fmt.Sprintf("f%02d.jpg", i), testJPEG(t, 32+i, 24))
	}
	a.eventually(20*time.Second, "all frames done", func() bool { return len(a.frames("done")) == n })
	a.stop()
	b.stop()
	runs := map[string]int{}
	for i, logs := range []string{a.logs.String(), b.logs.String()} {
		mine := 0
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, `"message":"deblurred"`) {
				_, rest, _ := strings.Cut(l, `"name":"`)
				name, _, _ := strings.Cut(rest, `"`)
				runs[name]++
				mine++
			}
		}
		if mine == 0 {
			t.Errorf("daemon %s deblurred no frame", []string{"a", "b"}[i])
		}
	}
	if len(runs) != n {
		t.Errorf("%d frames deblurred, want %d: %v", len(runs), n, runs)
	}
	for name, k := range runs {
		if k != 1 {
			t.Errorf("%s deblurred %d times", name, k)
		}
	}
	if out := a.frames("out"); len(out) != n {
		t.Errorf("out/ holds %d outputs, want %d: %v", len(out), n, out)
	}
	for _, id := range []string{"a", "b"} {
		if fi, err := os.Stat(filepath.Join(dir, "spool", "work", id)); err != nil || !fi.IsDir() {
			t.Errorf("work/%s/: %v", id, err)
		}
	}
}

// TestSameInstanceRefused: a second daemon with a running one's id does
// not start, and says which key to change.
func TestSameInstanceRefused(t *testing.T) {
	dir := t.TempDir()
	a := start(t, setup{dir: dir, toml: sharedSpool("a")})
	a.waitReady()
	other := t.TempDir()
	doc := strings.Replace(testConfig(sharedSpool("a")), `root = "spool"`, fmt.Sprintf("root = %q", filepath.Join(dir, "spool")), 1)
	cfgPath := filepath.Join(other, "hidiffd.toml")
	if err := os.WriteFile(cfgPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Run(context.Background(), Options{ConfigPath: cfgPath, LogOutput: &syncBuffer{}, Version: "test",
		OpenBackend: func(*config.Config) (deblur.Backend, error) { return &fakeBackend{}, nil }, SkipWarmup: true})
	if err == nil || !strings.Contains(err.Error(), "spool.instance") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second daemon with instance a: %v", err)
	}
}
