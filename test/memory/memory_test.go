// Package memory checks the daemon's memory budget (issue 12, D4) on the
// real binary: two 7000x7000 16-bit PNGs, all zero (each a few hundred KB
// on disk, 49 megapixels, just under the default spool.max_pixels), dropped
// at once, must be deblurred without the daemon's peak RSS, read from the
// kernel's accounting of the child process (getrusage ru_maxrss), going
// over the default limits.memory_mib. The network is a tiny ONNX graph run
// by the real ONNX Runtime (hidiffd/internal/tinyonnx), so the test measures
// the frame path, not a model, and takes well under a minute; it needs ONNX
// Runtime (third_party/onnxruntime, scripts/setup-ort.sh) and skips without
// it. `go test -short` skips it.
//
// HIDIFFD_MEMORY_BIN runs an already built binary instead of building one
// (to measure another version).
package memory

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"hidiffd/config"
	"hidiffd/imageio/metatest"
	"hidiffd/internal/tinyonnx"
)

func TestTwoHugePNGsStayWithinTheBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes and encodes two 49-megapixel frames; skipped with -short")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ortArch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	ortLib := filepath.Join(repo, "third_party", "onnxruntime", "linux-"+ortArch, "libonnxruntime.so.1")
	if env := os.Getenv("HIDIFFD_ORT_LIB"); env != "" {
		ortLib = env
	}
	if _, err := os.Stat(ortLib); err != nil {
		t.Skipf("ONNX Runtime library missing (%v): run scripts/setup-ort.sh", err)
	}
	tmp := t.TempDir()
	bin := os.Getenv("HIDIFFD_MEMORY_BIN")
	if bin == "" {
		bin = filepath.Join(tmp, "hidiffd")
		build := exec.Command("go", "build", "-o", bin, "./cmd/hidiffd")
		build.Dir = repo
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/hidiffd: %v\n%s", err, out)
		}
	}
	model := filepath.Join(tmp, "model")
	if err := os.Mkdir(model, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := tinyonnx.WriteModel(model, nil); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(tmp, "spool")
	cfgPath := filepath.Join(tmp, "hidiffd.toml")
	// No [limits]: the default budget is what is checked.
	cfg := fmt.Sprintf(`[spool]
root = %q
settle = "100ms"
rescan = "1s"

[model]
dir = %q

[backend]
kind = "onnxruntime"
onnxruntime_library = %q

[http]
listen = ""

[log]
format = "json"
`, root, model, ortLib)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	budget := int64(config.Default().Limits.MemoryMiB) << 20

	const side = 7000
	png := filepath.Join(tmp, "zero.png")
	if err := os.WriteFile(png, metatest.ZeroPNG(side, side, 16), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(png)
	t.Logf("%dx%d 16-bit PNG of zeros: %d bytes", side, side, fi.Size())

	logPath := filepath.Join(tmp, "hidiffd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	dumpLog := func() {
		b, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("daemon log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	waitFor := func(within time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			select {
			case <-exited:
				dumpLog()
				t.Fatalf("hidiffd exited while waiting for %s: %v", what, cmd.ProcessState)
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				dumpLog()
				t.Fatalf("timed out after %v waiting for %s", within, what)
			}
		}
	}
	inbox := filepath.Join(root, "inbox")
	waitFor(60*time.Second, "the spool", func() bool { _, err := os.Stat(inbox); return err == nil })
	data, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.png", "b.png"} {
		tmpName := filepath.Join(inbox, "."+name+".tmp")
		if err := os.WriteFile(tmpName, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmpName, filepath.Join(inbox, name)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	done := func(n string) bool { _, err := os.Stat(filepath.Join(root, "done", n)); return err == nil }
	waitFor(15*time.Minute, "both frames deblurred", func() bool { return done("a.png") && done("b.png") })
	took := time.Since(start)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("hidiffd did not stop within 60s of SIGTERM")
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatal("no rusage for the child")
	}
	peak := ru.Maxrss << 10 // KiB on Linux
	t.Logf("two %dx%d frames in %v; peak RSS %d MiB, default budget %d MiB (%.0f%%)",
		side, side, took.Round(time.Second), peak>>20, budget>>20, 100*float64(peak)/float64(budget))
	for _, n := range []string{"a.png", "b.png"} {
		if fi, err := os.Stat(filepath.Join(root, "out", n)); err != nil || fi.Size() == 0 {
			t.Errorf("out/%s: %v", n, err)
		}
	}
	if peak > budget {
		dumpLog()
		t.Errorf("peak RSS %d MiB is over the default limits.memory_mib (%d MiB)", peak>>20, budget>>20)
	}
	// The daemon must have said that it held the second frame back.
	b, _ := os.ReadFile(logPath)
	held := false
	for _, l := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && strings.HasPrefix(fmt.Sprint(m["message"]), "waiting for memory") {
			held = true
		}
	}
	if !held {
		t.Errorf("no \"waiting for memory\" line: the two frames were not serialised by the budget")
	}
}
