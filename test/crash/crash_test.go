// Package crash holds the product's acceptance test: the real hidiffd binary
// is SIGKILLed at random moments while frames (valid and broken) arrive, and
// afterwards every frame must be in exactly one final state with the right
// result. It needs the exported test model (build/models/s, or
// $HIDIFFD_TEST_MODELS/s) and ONNX Runtime (third_party/onnxruntime, from
// scripts/setup-ort.sh); without them it skips and says why. It takes one to
// three minutes; `go test -short` skips it.
//
// Knobs: HIDIFFD_CRASH_FILES (default 200), HIDIFFD_CRASH_KILLS (default 5),
// HIDIFFD_CRASH_SEED (default: time-based, logged so a failure can be
// replayed), HIDIFFD_CRASH_KEEP=1 keeps the spool folder for inspection.
package crash

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hidiffd/imageio/metatest"
)

const (
	maxPixels = 1_000_000 // the configured limit; the "huge" PNG claims 25 M
	settle    = 200 * time.Millisecond
)

// kind is what an input is and therefore where it must end up.
type kind int

const (
	validJPEG kind = iota
	validPNG
	truncJPEG
	truncPNG
	zeroBytes
	textAsJPEG
	hugePNG
	symlink
)

var kindNames = []string{"valid-jpeg", "valid-png", "trunc-jpeg", "trunc-png", "zero", "text", "huge-png", "symlink"}

func (k kind) valid() bool { return k == validJPEG || k == validPNG }

type input struct {
	name    string
	kind    kind
	w, h    int
	data    []byte
	inPlace bool // written in place in chunks (else tmp-then-rename)
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test takes minutes; skipped with -short")
	}
	env := setupEnv(t)
	nFiles := envInt(t, "HIDIFFD_CRASH_FILES", 200)
	nKills := envInt(t, "HIDIFFD_CRASH_KILLS", 5)
	seed := int64(envInt(t, "HIDIFFD_CRASH_SEED", int(time.Now().UnixNano()%1_000_000_000)))
	t.Logf("seed %d (replay with HIDIFFD_CRASH_SEED=%d), %d files, %d kills", seed, seed, nFiles, nKills)
	rng := rand.New(rand.NewSource(seed))
	start := time.Now()

	tmp, bin, cfgPath := env.tmp, env.bin, env.cfg
	root := filepath.Join(tmp, "spool")
	writeConfig(t, env, root, "200ms")
	inputs := makeInputs(t, rng, nFiles, tmp)
	d := &daemon{t: t, bin: bin, cfg: cfgPath, logDir: tmp}
	t.Cleanup(d.kill)

	// The daemon creates the spool; wait for inbox/ before dropping.
	inbox := d.startAndWaitInbox(t, root)

	// Producer: drops the inputs at a random pace while the daemon is
	// killed and restarted.
	var wg sync.WaitGroup
	wg.Add(1)
	dropRng := rand.New(rand.NewSource(seed + 1))
	go func() {
		defer wg.Done()
		for _, in := range inputs {
			if err := drop(inbox, in, dropRng); err != nil {
				t.Errorf("drop %s: %v", in.name, err)
				return
			}
			time.Sleep(time.Duration(dropRng.Intn(50)) * time.Millisecond)
		}
	}()

	byName := map[string]*input{}
	for i := range inputs {
		byName[inputs[i].name] = &inputs[i]
	}

	// Kill moments: most kills land while frames are being processed (after
	// the restarted daemon has finished at least one more frame, plus a
	// random delay), some 0-3s after a start (often during spool recovery or
	// model loading).
	for k := 1; k <= nKills; k++ {
		what := "at a random moment after start"
		wait := time.Duration(rng.Intn(3000)) * time.Millisecond
		if k == 1 || rng.Intn(5) != 0 {
			what = "while processing"
			before := snapshot(t, root)
			progressed := pollUntil(60*time.Second, func() bool {
				d.checkAlive()
				now := snapshot(t, root)
				return len(now.done)+len(now.failed) > len(before.done)+len(before.failed)
			})
			if !progressed {
				what = "after 60s without progress"
			}
			wait = time.Duration(rng.Intn(2500)) * time.Millisecond
		}
		d.sleepAlive(wait)
		d.sigkill()
		snap := snapshot(t, root)
		t.Logf("kill %d %s (+%v): inbox %d, work %d, out %d (tmp %d), done %d, failed %d",
			k, what, wait.Round(time.Millisecond), len(snap.inbox), len(snap.work), len(snap.out), snap.outTmp,
			len(snap.done), len(snap.failed))
		snap.checkAtMostOnce(t, byName)
		d.start()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Final run: let it drain everything, then stop it politely.
	total := len(inputs)
	deadline := 240*time.Second - time.Since(start)
	if deadline < 60*time.Second {
		deadline = 60 * time.Second
	}
	var last snap
	ok := pollUntil(deadline, func() bool {
		d.checkAlive()
		last = snapshot(t, root)
		return len(last.inbox) == 0 && len(last.work) == 0 && len(last.done)+len(last.failed) >= total
	})
	if !ok {
		d.dumpLog()
		t.Fatalf("not drained after %v: inbox %d (%v), work %d, done %d, failed %d of %d",
			deadline, len(last.inbox), head(last.inbox, 10), len(last.work), len(last.done), len(last.failed), total)
	}
	code := d.sigterm(30 * time.Second)
	if code != 0 {
		d.dumpLog()
		t.Errorf("hidiffd exited with status %d after SIGTERM, want 0", code)
	}
	elapsed := time.Since(start)

	final := snapshot(t, root)
	final.checkFinal(t, root, byName)
	d.checkLogs()
	nValid := 0
	for _, in := range inputs {
		if in.kind.valid() {
			nValid++
		}
	}
	t.Logf("%d files (%d valid, %d invalid), %d SIGKILLs + SIGTERM, %d daemon starts, %v in all",
		total, nValid, total-nValid, nKills, d.starts, elapsed.Round(time.Second))
}

func envInt(t *testing.T, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", key, v)
	}
	return n
}

// testEnv is what the crash tests run: the binary built from this
// checkout, the exported test model, ONNX Runtime, a scratch folder, and
// the configuration file written there by writeConfig.
type testEnv struct {
	repo, modelDir, ortLib string
	tmp, bin, cfg          string
}

// setupEnv finds the model and ONNX Runtime (skipping the test, saying why,
// without them) and builds the binary into a scratch folder
// (HIDIFFD_CRASH_KEEP=1: one that is kept).
func setupEnv(t *testing.T) testEnv {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", repo, err)
	}
	e := testEnv{repo: repo, modelDir: filepath.Join(repo, "build", "models", "s")}
	if env := os.Getenv("HIDIFFD_TEST_MODELS"); env != "" {
		e.modelDir = filepath.Join(env, "s")
	}
	for _, f := range []string{"prior.onnx", "transformer.onnx"} {
		if _, err := os.Stat(filepath.Join(e.modelDir, f)); err != nil {
			t.Skipf("test model missing (%v): export it with the Python side into build/models/s "+
				"or set HIDIFFD_TEST_MODELS", err)
		}
	}
	ortArch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	e.ortLib = filepath.Join(repo, "third_party", "onnxruntime", "linux-"+ortArch, "libonnxruntime.so.1")
	if env := os.Getenv("HIDIFFD_ORT_LIB"); env != "" {
		e.ortLib = env
	}
	if _, err := os.Stat(e.ortLib); err != nil {
		t.Skipf("ONNX Runtime library missing (%v): run scripts/setup-ort.sh", err)
	}
	e.tmp = t.TempDir()
	if os.Getenv("HIDIFFD_CRASH_KEEP") != "" {
		if e.tmp, err = os.MkdirTemp("", "hidiffd-crash-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("keeping %s", e.tmp)
	}
	start := time.Now()
	e.bin = filepath.Join(e.tmp, "hidiffd")
	build := exec.Command("go", "build", "-o", e.bin, "./cmd/hidiffd")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hidiffd: %v\n%s", err, out)
	}
	t.Logf("built hidiffd in %v", time.Since(start).Round(time.Millisecond))
	e.cfg = filepath.Join(e.tmp, "hidiffd.toml")
	return e
}

// writeConfig writes the daemon's configuration for a spool at root: the
// test model untiled, ONNX Runtime, the pixel limit maxPixels.
func writeConfig(t *testing.T, e testEnv, root, settle string) {
	t.Helper()
	cfg := fmt.Sprintf(`[spool]
root = %q
keep_originals = true
settle = %q
rescan = "1s"
max_pixels = %d

[model]
dir = %q
tile = 0

[backend]
kind = "onnxruntime"
onnxruntime_library = %q

[http]
listen = "127.0.0.1:0"

[log]
level = "info"
format = "json"

[shutdown]
drain_timeout = "20s"
`, root, settle, maxPixels, e.modelDir, e.ortLib)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeInputs builds the frames: about 70% valid JPEG/PNG of 48x64..96x128,
// the rest broken in every way the daemon must survive.
func makeInputs(t *testing.T, rng *rand.Rand, n int, tmp string) []input {
	t.Helper()
	// The symlinks point at a valid JPEG outside the spool: a valid target
	// does not make a symlink acceptable.
	target := filepath.Join(tmp, "symlink-target.jpg")
	if err := os.WriteFile(target, encodeJPEG(t, randomImage(rng, 64, 64)), 0o644); err != nil {
		t.Fatal(err)
	}
	// A fixed share of each broken kind, so every kind is present even in
	// small runs; the rest are valid.
	var kinds []kind
	for _, k := range []kind{truncJPEG, truncPNG, zeroBytes, textAsJPEG, hugePNG, symlink} {
		for i := 0; i < max(1, n/20); i++ {
			kinds = append(kinds, k)
		}
	}
	for len(kinds) < n {
		kinds = append(kinds, kind(rng.Intn(2))) // validJPEG or validPNG
	}
	kinds = kinds[:n]
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })

	inputs := make([]input, n)
	for i, k := range kinds {
		in := input{kind: k, inPlace: i%2 == 1}
		ext := ".jpg"
		if k == validPNG || k == truncPNG || k == hugePNG {
			ext = ".png"
		}
		in.name = fmt.Sprintf("f%03d-%s%s", i, kindNames[k], ext)
		in.w, in.h = 48+rng.Intn(49), 64+rng.Intn(65)
		switch k {
		case validJPEG, validPNG, truncJPEG, truncPNG:
			in.data = imageBytes(t, rng, k, in.w, in.h)
		case zeroBytes:
			in.data = nil
		case textAsJPEG:
			in.data = []byte("this is a text file, not a JPEG\n")
		case hugePNG:
			in.w, in.h = 5000, 5000
			in.data = hugePNGHeader(5000, 5000)
		case symlink:
			in.data = []byte(target) // the link target
		}
		inputs[i] = in
	}
	// Some neighbours (processed one after the other) get transposed sizes
	// of equal pixel count, e.g. 72x88 then 88x72: a pipeline that reuses a
	// buffer by length and forgets its shape fails exactly there.
	pairs := 0
	for i := 0; i+1 < n; i++ {
		a, b := &inputs[i], &inputs[i+1]
		if !a.kind.valid() || !b.kind.valid() || (pairs > 0 && rng.Intn(6) != 0) {
			continue
		}
		w := 64 + 8*rng.Intn(4)           // 64..88
		h := w + 8 + 8*rng.Intn((96-w)/8) // w+8..96: both orientations fit the size range
		a.w, a.h, b.w, b.h = w, h, h, w
		for _, in := range []*input{a, b} {
			in.data = imageBytes(t, rng, in.kind, in.w, in.h)
		}
		pairs++
		i++
	}
	return inputs
}

// randomImage is a smooth gradient with noise, a little like a blurry photo.
// imageBytes is a random w x h image encoded as kind says: a valid JPEG or
// PNG, or the first half of one.
func imageBytes(t *testing.T, rng *rand.Rand, k kind, w, h int) []byte {
	t.Helper()
	switch k {
	case validJPEG:
		return encodeJPEG(t, randomImage(rng, w, h))
	case validPNG:
		return encodePNG(t, randomImage(rng, w, h))
	case truncJPEG:
		full := encodeJPEG(t, randomImage(rng, w, h))
		return full[:len(full)/2]
	case truncPNG:
		full := encodePNG(t, randomImage(rng, w, h))
		return full[:len(full)/2]
	}
	t.Fatalf("imageBytes: kind %d is not an image kind", k)
	return nil
}

func randomImage(rng *rand.Rand, w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r0, g0, b0 := rng.Intn(200), rng.Intn(200), rng.Intn(200)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := rng.Intn(24)
			img.SetNRGBA(x, y, color.NRGBA{
				R: uint8((r0 + x*55/w + n) % 256),
				G: uint8((g0 + y*55/h + n) % 256),
				B: uint8((b0 + (x+y)*30/(w+h) + n) % 256),
				A: 255,
			})
		}
	}
	return img
}

func encodeJPEG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// hugePNGHeader is a well-formed PNG start (signature, IHDR with valid CRC)
// claiming w x h RGB pixels, followed by a tiny IDAT and IEND: a daemon must
// refuse it from the header, before allocating w*h pixels.
func hugePNGHeader(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	return metatest.PNGChunks(metatest.Chunk("IHDR", ihdr),
		metatest.Chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01}), // empty zlib stream
		metatest.Chunk("IEND", nil))
}

// drop puts one input into inbox/ the way a camera would: either written
// elsewhere (a dotfile .tmp in inbox/) and renamed in, or written in place in
// a few chunks with pauses shorter than the settle time.
func drop(inbox string, in input, rng *rand.Rand) error {
	dst := filepath.Join(inbox, in.name)
	if in.kind == symlink {
		return os.Symlink(string(in.data), dst)
	}
	if !in.inPlace {
		tmp := filepath.Join(inbox, "."+in.name+".tmp")
		if err := os.WriteFile(tmp, in.data, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, dst)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	data := in.data
	chunks := 1 + rng.Intn(4)
	size := (len(data) + chunks - 1) / max(chunks, 1)
	for len(data) > 0 {
		n := min(size, len(data))
		if _, err := f.Write(data[:n]); err != nil {
			f.Close()
			return err
		}
		data = data[n:]
		if len(data) > 0 {
			time.Sleep(time.Duration(10+rng.Intn(40)) * time.Millisecond) // < settle
		}
	}
	return f.Close()
}

// daemon runs and kills the hidiffd binary, one log file per start.
type daemon struct {
	t      *testing.T
	bin    string
	cfg    string
	logDir string
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
	logs   []string
}

func (d *daemon) start() {
	d.t.Helper()
	d.starts++
	logPath := filepath.Join(d.logDir, fmt.Sprintf("hidiffd-%d.log", d.starts))
	f, err := os.Create(logPath)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.bin, "run", "--config", d.cfg)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=") // no systemd here
	if err := cmd.Start(); err != nil {
		f.Close()
		d.t.Fatalf("start hidiffd: %v", err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	d.logs = append(d.logs, logPath)
	go func(exited chan struct{}) {
		cmd.Wait()
		f.Close()
		close(exited)
	}(d.exited)
}

// checkAlive fails the test if the daemon exited on its own.
// startAndWaitInbox starts the daemon and returns root/inbox once the
// daemon has created it.
func (d *daemon) startAndWaitInbox(t *testing.T, root string) string {
	t.Helper()
	d.start()
	inbox := filepath.Join(root, "inbox")
	waitFor(t, 60*time.Second, "inbox/ created", func() bool {
		d.checkAlive()
		_, err := os.Stat(inbox)
		return err == nil
	})
	return inbox
}

func (d *daemon) checkAlive() {
	d.t.Helper()
	select {
	case <-d.exited:
		d.dumpLog()
		d.t.Fatalf("hidiffd exited by itself: %v", d.cmd.ProcessState)
	default:
	}
}

func (d *daemon) sleepAlive(dur time.Duration) {
	d.t.Helper()
	select {
	case <-d.exited:
		d.checkAlive()
	case <-time.After(dur):
	}
}

func (d *daemon) sigkill() {
	d.t.Helper()
	d.checkAlive()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// sigterm stops the daemon politely and returns its exit status.
func (d *daemon) sigterm(timeout time.Duration) int {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		d.t.Errorf("hidiffd still running %v after SIGTERM", timeout)
		d.kill()
		return -1
	}
}

func (d *daemon) kill() {
	if d.cmd == nil {
		return
	}
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
	}
}

func (d *daemon) dumpLog() {
	if len(d.logs) == 0 {
		return
	}
	b, _ := os.ReadFile(d.logs[len(d.logs)-1])
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	d.t.Logf("last log lines of start %d:\n%s", len(d.logs), strings.Join(lines[max(0, len(lines)-40):], "\n"))
}

// checkLogs looks for crashes of the daemon's own making in all runs.
func (d *daemon) checkLogs() {
	for i, p := range d.logs {
		f, err := os.Open(p)
		if err != nil {
			d.t.Error(err)
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "panic:") || strings.Contains(line, "DATA RACE") ||
				strings.HasPrefix(line, "fatal error:") {
				d.t.Errorf("start %d: %s", i+1, line)
			}
		}
		f.Close()
	}
}

// snap is the content of the spool folders at one moment.
type snap struct {
	inbox, work, out, done, failed []string // frame names (no dotfiles; failed without records)
	inboxDot                       []string // dotfiles in inbox/ (the producer's temporary files)
	records                        []string // failed/*.error.json
	outTmp                         int      // dotfiles in out/ (temporary outputs)
	other                          []string // dotfiles anywhere else
}

func snapshot(t *testing.T, root string) snap {
	t.Helper()
	var s snap
	for _, state := range []string{"inbox", "work", "out", "done", "failed"} {
		es, err := stateEntries(root, state)
		if err != nil {
			t.Fatalf("read %s/: %v", state, err)
		}
		for _, e := range es {
			n := e.name
			switch {
			case state == "inbox" && strings.HasPrefix(n, "."):
				s.inboxDot = append(s.inboxDot, n)
			case state == "out" && strings.HasPrefix(n, "."):
				s.outTmp++
			case strings.HasPrefix(n, "."):
				s.other = append(s.other, state+"/"+n)
			case state == "failed" && strings.HasSuffix(n, ".error.json"):
				s.records = append(s.records, n)
			default:
				switch state {
				case "inbox":
					s.inbox = append(s.inbox, n)
				case "work":
					s.work = append(s.work, n)
				case "out":
					s.out = append(s.out, n)
				case "done":
					s.done = append(s.done, n)
				case "failed":
					s.failed = append(s.failed, n)
				}
			}
		}
	}
	return s
}

// spoolEntry is a file in a state folder: its name and path.
type spoolEntry struct{ name, path string }

// stateEntries lists a state folder. work/ holds one folder per daemon
// instance (work/<id>/), and in it the folder of a dead instance being
// taken over (.hidiffd-takeover-*); their frames are listed, the folders
// are not. Files directly in work/ (a version before instances) are listed
// too.
func stateEntries(root, state string) ([]spoolEntry, error) {
	dir := filepath.Join(root, state)
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []spoolEntry
	for _, e := range es {
		p := filepath.Join(dir, e.Name())
		if state != "work" || !e.IsDir() {
			out = append(out, spoolEntry{e.Name(), p})
			continue
		}
		inner, err := os.ReadDir(p)
		if err != nil && !os.IsNotExist(err) { // a takeover renames it away
			return nil, err
		}
		for _, f := range inner {
			q := filepath.Join(p, f.Name())
			if f.IsDir() && strings.HasPrefix(f.Name(), ".hidiffd-takeover-") {
				sub, _ := os.ReadDir(q)
				for _, g := range sub {
					out = append(out, spoolEntry{g.Name(), filepath.Join(q, g.Name())})
				}
				continue
			}
			out = append(out, spoolEntry{f.Name(), q})
		}
	}
	return out, nil
}

// checkAtMostOnce: right after a SIGKILL no frame may be in two state
// folders, and nothing unknown may appear.
func (s snap) checkAtMostOnce(t *testing.T, inputs map[string]*input) {
	t.Helper()
	where := map[string][]string{}
	for state, names := range map[string][]string{"inbox": s.inbox, "work": s.work, "done": s.done, "failed": s.failed} {
		for _, n := range names {
			where[n] = append(where[n], state)
		}
	}
	for n, states := range where {
		if inputs[n] == nil {
			t.Errorf("unknown file %q in %v (renamed or duplicated frame?)", n, states)
		} else if len(states) > 1 {
			t.Errorf("frame %s is in %v at once", n, states)
		}
	}
}

func (s snap) checkFinal(t *testing.T, root string, inputs map[string]*input) {
	t.Helper()
	if len(s.inbox)+len(s.inboxDot) != 0 || len(s.work) != 0 {
		t.Errorf("inbox/ %v %v and work/ %v should be empty", s.inbox, s.inboxDot, s.work)
	}
	if s.outTmp != 0 {
		t.Errorf("%d temporary files left in out/", s.outTmp)
	}
	if len(s.other) != 0 {
		t.Errorf("stray dotfiles: %v", s.other)
	}
	s.checkAtMostOnce(t, inputs)
	done, failed, out, records := set(s.done), set(s.failed), set(s.out), set(s.records)

	var wrong []string
	for name, in := range inputs {
		inDone, inFailed := done[name], failed[name]
		switch {
		case !inDone && !inFailed:
			t.Errorf("%s (%s) is lost: in neither done/ nor failed/", name, kindNames[in.kind])
			continue
		case in.kind.valid() && !inDone:
			wrong = append(wrong, name+" (valid) in failed/: "+readReason(root, name))
		case !in.kind.valid() && !inFailed:
			wrong = append(wrong, name+" ("+kindNames[in.kind]+") in done/")
		}
		if inDone {
			if !out[name] {
				t.Errorf("%s is done but out/%s is missing", name, name)
			} else {
				checkOutput(t, filepath.Join(root, "out", name), in)
			}
			// The original is kept unchanged.
			if b, err := os.ReadFile(filepath.Join(root, "done", name)); err != nil || !bytes.Equal(b, in.data) {
				t.Errorf("done/%s differs from the input (%v)", name, err)
			}
		}
		if inFailed {
			checkRecord(t, root, name)
			if out[name] {
				t.Errorf("%s failed but has an output in out/", name)
			}
			if in.kind == symlink {
				if fi, err := os.Lstat(filepath.Join(root, "failed", name)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("failed/%s is no longer the symlink (%v)", name, err)
				}
			}
		}
	}
	sort.Strings(wrong)
	for _, w := range wrong {
		t.Errorf("misclassified: %s", w)
	}
	for n := range out {
		if !done[n] {
			t.Errorf("out/%s has no original in done/", n)
		}
	}
	for r := range records {
		if !failed[strings.TrimSuffix(r, ".error.json")] {
			t.Errorf("failed/%s has no frame beside it", r)
		}
	}
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// checkOutput decodes an output completely and compares its size with the
// input's.
func checkOutput(t *testing.T, path string, in *input) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	img, format, err := image.Decode(f)
	if err != nil {
		t.Errorf("out/%s does not decode: %v", in.name, err)
		return
	}
	if b := img.Bounds(); b.Dx() != in.w || b.Dy() != in.h {
		t.Errorf("out/%s is %dx%d (%s), input was %dx%d", in.name, b.Dx(), b.Dy(), format, in.w, in.h)
	}
}

type record struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
	Stage  string `json:"stage"`
	Time   string `json:"time"`
	Size   *int64 `json:"size"`
}

func checkRecord(t *testing.T, root, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "failed", name+".error.json"))
	if err != nil {
		t.Errorf("failed/%s has no error record: %v", name, err)
		return
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Errorf("failed/%s.error.json does not parse: %v\n%s", name, err, b)
		return
	}
	if r.Name != name || r.Reason == "" || r.Stage == "" || r.Size == nil {
		t.Errorf("failed/%s.error.json incomplete: %s", name, b)
	}
	if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil {
		t.Errorf("failed/%s.error.json time: %v", name, err)
	}
}

func readReason(root, name string) string {
	b, err := os.ReadFile(filepath.Join(root, "failed", name+".error.json"))
	if err != nil {
		return err.Error()
	}
	var r record
	json.Unmarshal(b, &r)
	return r.Stage + ": " + r.Reason
}

func head(s []string, n int) []string { return s[:min(n, len(s))] }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !pollUntil(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

func pollUntil(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
