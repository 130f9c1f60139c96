package daemon

import (
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// imageSize decodes the header of a file in a state folder.
func (in *instance) imageSize(state, name string) (w, h int) {
	in.t.Helper()
	f, err := os.Open(filepath.Join(in.dir(state), name))
	if err != nil {
		in.t.Fatal(err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		in.t.Fatalf("%s/%s: %v", state, name, err)
	}
	return cfg.Width, cfg.Height
}

// frames lists a state folder without dotfiles and error records.
func (in *instance) frames(state string) []string {
	var out []string
	for _, n := range in.names(state) {
		if !strings.HasPrefix(n, ".") && !strings.HasSuffix(n, ".error.json") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// checkPairs: every original in done/ has its own output in out/ under the
// same name, of the same size (the fake network returns its input).
func (in *instance) checkPairs() {
	in.t.Helper()
	for _, n := range in.frames("done") {
		if !in.has("out", n) {
			in.t.Errorf("done/%s has no out/%s (out/ = %v)", n, n, in.frames("out"))
			continue
		}
		dw, dh := in.imageSize("done", n)
		ow, oh := in.imageSize("out", n)
		if dw != ow || dh != oh {
			in.t.Errorf("out/%s is %dx%d but its original done/%s is %dx%d: outputs paired with the wrong frame",
				n, ow, oh, n, dw, dh)
		}
	}
}

// TestSameNameFramesKeepEveryOutput is a camera that restarts its numbering
// (issue 12, D2): a second a.jpg arrives while the first is in work/, a
// third after a restart of the daemon, a fourth with keep_originals off, a
// broken fifth. Every frame keeps its own output: out/ and done/ (or
// failed/) hold one name per frame, the first free one of a.jpg, a.1.jpg,
// a.2.jpg..., and no output is ever replaced.
func TestSameNameFramesKeepEveryOutput(t *testing.T) {
	dir := t.TempDir()
	fb, entered, proceed := holdFirst()
	in := start(t, setup{dir: dir, backend: fb})
	in.waitReady()
	in.drop("a.jpg", testJPEG(t, 64, 48))
	<-entered // the first a.jpg is in the network, its original in work/
	in.drop("a.jpg", testJPEG(t, 48, 64))
	close(proceed)
	in.eventually(10*time.Second, "both a.jpg processed", func() bool {
		return len(in.frames("done")) == 2 && len(in.frames("inbox")) == 0 && len(in.frames("work")) == 0
	})
	if got := strings.Join(in.frames("out"), ","); got != "a.1.jpg,a.jpg" {
		t.Errorf("out/ = %s, want a.jpg and a.1.jpg", got)
	}
	in.checkPairs()
	in.stop()

	// The camera goes on after a restart of the daemon.
	in = start(t, setup{dir: dir})
	in.waitReady()
	in.drop("a.jpg", testJPEG(t, 40, 40))
	in.eventually(10*time.Second, "third a.jpg processed", func() bool { return len(in.frames("done")) == 3 })
	if got := strings.Join(in.frames("out"), ","); got != "a.1.jpg,a.2.jpg,a.jpg" {
		t.Errorf("out/ = %s, want a.jpg, a.1.jpg, a.2.jpg", got)
	}
	in.checkPairs()
	in.stop()

	// Without originals out/ alone says which names are taken; a broken
	// frame takes the next name in failed/, and its record says both names.
	in = start(t, setup{dir: dir, toml: "[spool]\nroot = \"spool\"\nsettle = \"50ms\"\nrescan = \"200ms\"\nqueue_size = 4\nkeep_originals = false\n"})
	in.waitReady()
	in.drop("a.jpg", testJPEG(t, 32, 24))
	in.eventually(10*time.Second, "fourth a.jpg processed", func() bool { return len(in.frames("out")) == 4 })
	if w, h := in.imageSize("out", "a.3.jpg"); w != 32 || h != 24 {
		t.Errorf("out/a.3.jpg is %dx%d, want the fourth frame's 32x24", w, h)
	}
	in.drop("a.jpg", []byte("not an image"))
	in.eventually(10*time.Second, "broken a.jpg failed", func() bool { return in.has("failed", "a.4.jpg.error.json") })
	var rec struct{ Name, File string }
	data, _ := os.ReadFile(filepath.Join(in.dir("failed"), "a.4.jpg.error.json"))
	if err := json.Unmarshal(data, &rec); err != nil || rec.Name != "a.jpg" || rec.File != "a.4.jpg" {
		t.Errorf("failed/a.4.jpg.error.json = %s (%v), want name a.jpg and file a.4.jpg", data, err)
	}
	if got := strings.Join(in.frames("out"), ","); got != "a.1.jpg,a.2.jpg,a.3.jpg,a.jpg" {
		t.Errorf("out/ = %s", got)
	}
	in.stop()
	for _, l := range strings.Split(in.logs.String(), "\n") {
		if strings.Contains(l, "replacing existing output") {
			t.Errorf("an output was replaced: %s", l)
		}
	}
}

// TestOutputFormatFollowsTheName: a PNG named .jpg is written as a JPEG
// under that name, a JPEG named .png as a PNG: the name and the bytes of
// an output always agree.
func TestOutputFormatFollowsTheName(t *testing.T) {
	in := start(t, setup{})
	in.waitReady()
	in.drop("p.jpg", testPNG(t, 40, 30))
	in.drop("j.png", testJPEG(t, 40, 30))
	in.eventually(10*time.Second, "both written", func() bool { return in.has("done", "p.jpg") && in.has("done", "j.png") })
	for name, want := range map[string]string{"p.jpg": "jpeg", "j.png": "png"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join(in.dir("out"), name))
			if err != nil {
				t.Fatal(err)
			}
			_, format, err := image.DecodeConfig(f)
			f.Close()
			if err != nil || format != want {
				t.Errorf("out/%s is %q (%v), want %s", name, format, err, want)
			}
		})
	}
	if n := len(in.logs.lines("the file's content does not match its name; the output is written in the format its name says")); n != 2 {
		t.Errorf("%d log lines about the mismatch, want 2", n)
	}
	in.stop()
}
