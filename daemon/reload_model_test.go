package daemon

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"hidiffd/config"
)

// TestReloadWarnsOfUnloadableModelDir: model.dir needs a restart, and a
// reload that names a folder without a loadable model says at once that
// the restart would fail, naming the key and the folder.
func TestReloadWarnsOfUnloadableModelDir(t *testing.T) {
	in := start(t, setup{})
	in.waitReady()
	empty := t.TempDir()
	doc := testConfig("[model]\ndir = \"" + empty + "\"\ntile = 64\noverlap = 8\n")
	if err := os.WriteFile(in.cfgPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	in.sigs <- syscall.SIGHUP
	const msg = "the reloaded model.dir cannot be loaded: a restart would fail; the running model stays"
	in.eventually(5*time.Second, "the warning", func() bool { return len(in.logs.lines(msg)) == 1 })
	e, _ := in.logs.lines(msg)[0]["error"].(string)
	if !strings.Contains(e, "model.dir") || !strings.Contains(e, empty) {
		t.Errorf("warning does not name the key and folder: %q", e)
	}
	in.drop("still.jpg", testJPEG(t, 32, 32))
	in.eventually(10*time.Second, "frames still processed", func() bool { return in.has("done", "still.jpg") })
	in.stop()
}

// TestReloadKeepsCommandLineOverride: a SIGHUP re-reads the file but keeps
// what the command line set over it (run --backend: Options.Amend), so an
// unchanged file reports no key as changed; without the amend on reload,
// backend.kind would read as "changed, needs a restart".
func TestReloadKeepsCommandLineOverride(t *testing.T) {
	amended := 0
	in := start(t, setup{amend: func(c *config.Config) error {
		amended++
		c.Backend.Kind = "onnxruntime" // the file (testConfig) leaves the default, auto
		return c.Validate()
	}})
	in.waitReady()
	in.sigs <- syscall.SIGHUP
	const msg = "configuration reloaded"
	in.eventually(5*time.Second, "the reload", func() bool { return len(in.logs.lines(msg)) == 1 })
	if got, _ := in.logs.lines(msg)[0]["needs_restart"].([]any); len(got) != 0 {
		t.Errorf("needs_restart = %v after a reload of the unchanged file, want none", got)
	}
	if len(in.logs.lines("changed key needs a restart to take effect")) != 0 {
		t.Error("a key was reported changed: the reload lost the override")
	}
	in.stop()
	if amended != 2 {
		t.Errorf("amend ran %d times, want 2 (start, SIGHUP)", amended)
	}
}
