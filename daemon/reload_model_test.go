package daemon

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
