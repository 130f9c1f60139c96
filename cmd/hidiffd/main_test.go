package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests here run the real binary, built once with a version stamped in.
const testVersion = "1.2.3-test"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func hidiffdBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hidiffd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "hidiffd")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", binPath, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// testModel finds the random-weight "s" model the Python side exports:
// $HIDIFFD_TEST_MODELS/s or <repo>/build/models/s; and the ONNX Runtime
// library. It skips the test, saying how to get them, when either is absent.
func testModel(t *testing.T) (modelDir, ortLib string) {
	t.Helper()
	root := repoRoot(t)
	models := filepath.Join(root, "build", "models")
	if env := os.Getenv("HIDIFFD_TEST_MODELS"); env != "" {
		models = env
	}
	modelDir = filepath.Join(models, "s")
	for _, f := range []string{"prior.onnx", "transformer.onnx"} {
		if _, err := os.Stat(filepath.Join(modelDir, f)); err != nil {
			t.Skipf("test model missing (%v): run `make models` (or set HIDIFFD_TEST_MODELS)", err)
		}
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	ortLib = filepath.Join(root, "third_party", "onnxruntime", "linux-"+arch, "libonnxruntime.so.1")
	if env := os.Getenv("HIDIFFD_ORT_LIB"); env != "" {
		ortLib = env
	}
	if _, err := os.Stat(ortLib); err != nil {
		t.Skipf("ONNX Runtime library missing (%v): run scripts/setup-ort.sh (make setup)", err)
	}
	return modelDir, ortLib
}

func testJPEG(t *testing.T, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 3), uint8(y * 5), uint8(x + y), 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestVersionFromLdflags(t *testing.T) {
	out, err := exec.Command(hidiffdBin(t), "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "hidiffd "+testVersion+"\n") || !strings.Contains(string(out), runtime.Version()) {
		t.Errorf("version output %q", out)
	}
}

func TestUsageAndUnknownCommand(t *testing.T) {
	cmd := exec.Command(hidiffdBin(t), "frobnicate")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if code := exitCode(err); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	for _, c := range []string{"run", "deblur", "doctor", "version"} {
		if !strings.Contains(stderr.String(), "\n  "+c+" ") {
			t.Errorf("usage does not list %q:\n%s", c, stderr.String())
		}
	}
}

func TestParseFlagsAfterPositionals(t *testing.T) {
	c := &Command{Name: "x"}
	fs := newFlagSet(c)
	out := fs.String("out", "d", "")
	tile := fs.Int("tile", 0, "")
	pos, st := parseFlags(fs, []string{"a.jpg", "--out", "o", "b.png", "--tile=64", "--", "--weird.jpg"})
	if st != -1 || *out != "o" || *tile != 64 || strings.Join(pos, ",") != "a.jpg,b.png,--weird.jpg" {
		t.Errorf("pos=%v st=%d out=%q tile=%d", pos, st, *out, *tile)
	}
}

// TestRunRefusesBadConfig: the daemon does not start on a config mistake and
// names file, line and key on stderr.
func TestRunRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.toml")
	os.WriteFile(cfg, []byte("[spool]\nroot = \"spool\"\n\n[model]\ntile = \"big\"\n[spool.extra]\n"), 0o644)
	cmd := exec.Command(hidiffdBin(t), "run", "--config", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if code := exitCode(cmd.Run()); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "bad.toml:5: model.tile = \"big\": wrong type") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

func TestRunRefusesTensorRT(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "trt.toml")
	os.WriteFile(cfg, []byte("[backend]\nkind = \"tensorrt\"\n"), 0o644)
	cmd := exec.Command(hidiffdBin(t), "run", "--config", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// The file is valid; the binary, built without -tags tensorrt, refuses
	// it at start, naming the key, its line and the remedy.
	if code := exitCode(cmd.Run()); code != 1 || !strings.Contains(stderr.String(), "trt.toml:2: backend.kind") ||
		!strings.Contains(stderr.String(), "rebuild with -tags tensorrt") {
		t.Errorf("exit %d, stderr %s", code, stderr.String())
	}
}

// TestRunBackendFlag: run's --backend is checked before anything starts
// (exit 2, naming the flag), and it wins over the file's backend.kind: a
// file asking for TensorRT, which this binary lacks, starts past the
// backend check with --backend onnxruntime (and then stops at the missing
// model, naming model.dir).
func TestRunBackendFlag(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "trt.toml")
	os.WriteFile(cfg, []byte("[backend]\nkind = \"tensorrt\"\n[model]\ndir = \"no-such-model\"\n[spool]\nroot = \"spool\"\n"), 0o644)
	cases := []struct {
		name, flag string
		code       int
		want, not  string
	}{
		{"unknown kind", "bogus", 2, `--backend "bogus": want onnxruntime, tensorrt or auto`, ""},
		{"tensorrt without TensorRT", "tensorrt", 2, "--backend tensorrt: this hidiffd binary was built without TensorRT", ""},
		{"onnxruntime over the file's tensorrt", "onnxruntime", 1, "model.dir", "backend.kind"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(hidiffdBin(t), "run", "--config", cfg, "--backend", c.flag)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if code := exitCode(cmd.Run()); code != c.code || !strings.Contains(stderr.String(), c.want) ||
				(c.not != "" && strings.Contains(stderr.String(), c.not)) {
				t.Errorf("exit %d (want %d), stderr %s\nwant it to contain %q", code, c.code, stderr.String(), c.want)
			}
		})
	}
}

// TestDaemonBinary plays systemd for the real binary with the real (random
// weight) model: notify socket and watchdog, READY=1 after the model loads,
// /readyz, one frame through, SIGTERM, exit 0, and the messages in order.
func TestDaemonBinary(t *testing.T) {
	modelDir, ortLib := testModel(t)
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var msgs []string
	gotReady := make(chan struct{})
	pings := make(chan struct{}, 16) // one per WATCHDOG=1, while there is room
	gotMark := make(chan struct{})   // the test's own end marker arrived
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			m := string(buf[:n])
			if m == "TEST_MARK=end" {
				close(gotMark)
				continue
			}
			mu.Lock()
			msgs = append(msgs, m)
			switch {
			case strings.HasPrefix(m, "READY=1"):
				close(gotReady)
			case m == "WATCHDOG=1":
				select {
				case pings <- struct{}{}:
				default: // enough counted; never block the reader
				}
			}
			mu.Unlock()
		}
	}()

	port := freePort(t)
	root := filepath.Join(dir, "spool")
	cfg := filepath.Join(dir, "hidiffd.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[spool]
root = %q
settle = "100ms"
rescan = "1s"
[model]
dir = %q
tile = 64
overlap = 8
[backend]
onnxruntime_library = %q
threads = 1
[http]
listen = "127.0.0.1:%d"
[log]
format = "auto"
`, root, modelDir, ortLib, port)), 0o644)

	cmd := exec.Command(hidiffdBin(t), "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath, "WATCHDOG_USEC=1000000")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	select {
	case <-gotReady:
	case <-time.After(60 * time.Second):
		t.Fatalf("no READY=1 within 60s; stderr: %s", stderr.String())
	}
	if code := httpCode(base + "/readyz"); code != 200 {
		t.Errorf("/readyz after READY=1: %d", code)
	}
	os.WriteFile(filepath.Join(root, "inbox", ".cam.jpg"), testJPEG(t, 100, 70), 0o644)
	os.Rename(filepath.Join(root, "inbox", ".cam.jpg"), filepath.Join(root, "inbox", "cam.jpg"))

	// The per-image JSON line (stdout is a pipe: format auto -> JSON).
	var line map[string]any
	deadline := time.After(60 * time.Second)
	for line == nil {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stdout closed; stderr: %s", stderr.String())
			}
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				t.Fatalf("stdout line is not JSON: %q", l)
			}
			if m["message"] == "deblurred" {
				line = m
			}
		case <-deadline:
			t.Fatal("no per-image log line within 60s")
		}
	}
	if line["name"] != "cam.jpg" || line["width"] != 100.0 || line["height"] != 70.0 || line["backend"] != "onnxruntime" {
		t.Errorf("per-image line: %v", line)
	}
	if _, err := os.Stat(filepath.Join(root, "out", "cam.jpg")); err != nil {
		t.Errorf("output: %v", err)
	}
	_, body := httpGet(base + "/metrics")
	for _, want := range []string{"hidiffd_images_processed_total 1", `hidiffd_build_info{goversion="` + runtime.Version() + `",version="` + testVersion + `"} 1`,
		`hidiffd_backend_info{backend="onnxruntime",model="HI-Diff"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Two watchdog pings (at half the 1s WATCHDOG_USEC) before the stop.
	for i := range 2 {
		select {
		case <-pings:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d WATCHDOG=1 within 30s, want 2", i)
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for range lines {
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if code := exitCode(err); code != 0 {
			t.Errorf("exit status %d after SIGTERM; stderr: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	// Datagrams arrive in the order they were sent: once a marker the test
	// sends after the exit is read, so is everything the daemon sent.
	if c, err := net.Dial("unixgram", sockPath); err != nil {
		t.Fatal(err)
	} else {
		c.Write([]byte("TEST_MARK=end"))
		c.Close()
	}
	select {
	case <-gotMark:
	case <-time.After(30 * time.Second):
		t.Fatal("the end marker never arrived on the notify socket")
	}
	mu.Lock()
	defer mu.Unlock()
	order := []string{}
	for _, m := range msgs {
		key, _, _ := strings.Cut(m, "=")
		if len(order) == 0 || order[len(order)-1] != key {
			order = append(order, key)
		}
	}
	t.Logf("sd_notify: %q", order)
	idx := func(k string) int {
		for i, o := range order {
			if o == k {
				return i
			}
		}
		return -1
	}
	if !(idx("STATUS") >= 0 && idx("EXTEND_TIMEOUT_USEC") >= 0 && idx("EXTEND_TIMEOUT_USEC") < idx("READY") &&
		idx("READY") < idx("WATCHDOG") && idx("WATCHDOG") < idx("STOPPING")) {
		t.Errorf("sd_notify order: %q", order)
	}
	// work/ holds this daemon's own folder, work/<host>/, and that is empty.
	if ents, _ := os.ReadDir(filepath.Join(root, "work")); len(ents) != 1 || !ents[0].IsDir() {
		t.Errorf("work/ should hold only this daemon's folder: %v", ents)
	} else if own, _ := os.ReadDir(filepath.Join(root, "work", ents[0].Name())); len(own) != 0 {
		t.Errorf("work/%s/ not empty: %v", ents[0].Name(), own)
	}
}

// TestDeblurOneShot runs `hidiffd deblur` on a folder with one good and one
// bad image: the good one lands under --out with its name, no temporary file
// stays, stdout (not a terminal) gets JSON lines, the exit status says one
// failed.
func TestDeblurOneShot(t *testing.T) {
	modelDir, ortLib := testModel(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	os.Mkdir(in, 0o755)
	os.WriteFile(filepath.Join(in, "a.jpg"), testJPEG(t, 72, 40), 0o644)
	var pngBuf bytes.Buffer
	png.Encode(&pngBuf, image.NewNRGBA64(image.Rect(0, 0, 30, 20)))
	os.WriteFile(filepath.Join(in, "b.png"), pngBuf.Bytes(), 0o644)
	os.WriteFile(filepath.Join(in, "c.jpg"), []byte("nope"), 0o644)
	os.WriteFile(filepath.Join(in, "notes.txt"), []byte("skipped: not an image extension"), 0o644)
	out := filepath.Join(dir, "res")

	cmd := exec.Command(hidiffdBin(t), "deblur", "--model", modelDir, "--tile", "64", "--threads", "1",
		in, "--out", out)
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if code := exitCode(cmd.Run()); code != 1 {
		t.Errorf("exit %d, want 1 (one bad file); stderr: %s", code, stderr.String())
	}
	ents, _ := os.ReadDir(out)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "a.jpg,b.png" {
		t.Errorf("--out holds %v", names)
	}
	var ok, failed int
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stdout line not JSON: %q", l)
		}
		switch m["message"] {
		case "deblurred":
			ok++
			if m["tiles"] == nil || m["total_ms"] == nil {
				t.Errorf("line lacks fields: %v", m)
			}
		case "failed":
			failed++
			if m["name"] != "c.jpg" || m["stage"] != "probe" {
				t.Errorf("failure line: %v", m)
			}
		}
	}
	if ok != 2 || failed != 1 {
		t.Errorf("lines: %d ok, %d failed\n%s", ok, failed, stdout.String())
	}
	// A 16-bit PNG stays 16-bit.
	f, _ := os.Open(filepath.Join(out, "b.png"))
	defer f.Close()
	if cfg, err := png.DecodeConfig(f); err != nil || cfg.ColorModel != color.RGBA64Model && cfg.ColorModel != color.NRGBA64Model {
		t.Errorf("b.png: %v, model %v", err, cfg.ColorModel)
	}
}

func TestDoctor(t *testing.T) {
	modelDir, ortLib := testModel(t)
	cmd := exec.Command(hidiffdBin(t), "doctor", "--model", modelDir)
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	out, err := cmd.Output()
	if code := exitCode(err); code != 0 {
		t.Errorf("doctor exit %d:\n%s", code, out)
	}
	for _, want := range []string{"onnxruntime: library " + ortLib, "tensorrt: not built in", "preset \"s\"", "no problems found"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	cmd = exec.Command(hidiffdBin(t), "doctor", "--model", t.TempDir())
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	out, err = cmd.Output()
	if code := exitCode(err); code != 1 || !bytes.Contains(out, []byte("FAIL")) {
		t.Errorf("doctor on an empty model folder: exit %d\n%s", code, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpCode(url string) int {
	code, _ := httpGet(url)
	return code
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
