package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// mustFail parses doc and returns the error text, failing if it parsed.
func mustFail(t *testing.T, doc string) string {
	t.Helper()
	_, err := Parse([]byte(doc), "/etc/hidiffd/test.toml")
	if err == nil {
		t.Fatalf("config parsed but should not have:\n%s", doc)
	}
	return err.Error()
}

func wantAll(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not contain %q", msg, p)
		}
	}
}

func TestUnknownKeyNamesKeyValueAndLine(t *testing.T) {
	msg := mustFail(t, "[spool]\nroot = \"/x\"\n\nqueue_sise = 4\n")
	wantAll(t, msg, "test.toml:4", "spool.queue_sise", "= 4", "unknown key")
}

func TestUnknownKeyInWrongTableSuggests(t *testing.T) {
	msg := mustFail(t, "[model]\nqueue_size = 4\n")
	wantAll(t, msg, ":2", "model.queue_size", "did you mean spool.queue_size")
}

func TestUnknownTable(t *testing.T) {
	msg := mustFail(t, "[spool]\nroot = \"/x\"\n[camera]\nid = 3\n")
	wantAll(t, msg, ":3: [camera]: unknown table")
}

func TestAllUnknownKeysReported(t *testing.T) {
	msg := mustFail(t, "[spool]\nfoo = 1\n[log]\nbar = \"x\"\n")
	wantAll(t, msg, "spool.foo", ":2", "log.bar", ":4")
}

func TestWrongTypeNamesKeyValueAndLine(t *testing.T) {
	cases := []struct{ doc, key, line, value, want string }{
		{"[spool]\nqueue_size = \"16\"\n", "spool.queue_size", ":2", `"16"`, "want an integer"},
		{"[spool]\n\n\nkeep_originals = 1 # yes\n", "spool.keep_originals", ":4", "= 1", "want a boolean"},
		{"[model]\ntile = 256.5\n", "model.tile", ":2", "256.5", "want an integer"},
		{"[log]\nlevel = 3\n", "log.level", ":2", "= 3", "want a string"},
		{"[model]\nseed = -1\n", "model.seed", ":2", "-1", ""},
	}
	for _, c := range cases {
		msg := mustFail(t, c.doc)
		wantAll(t, msg, c.key, c.line, c.value, c.want)
	}
}

func TestBadDurationNamesKeyValueAndLine(t *testing.T) {
	cases := []struct{ doc, key, line, value string }{
		{"[spool]\nsettle = \"2 seconds\"\n", "spool.settle", ":2", `"2 seconds"`},
		// A bare number has no unit; go-toml would hand "5" over silently.
		{"[retry]\n\ninitial_backoff = 5\n", "retry.initial_backoff", ":3", "= 5"},
		{"[shutdown]\ndrain_timeout = true\n", "shutdown.drain_timeout", ":2", "true"},
	}
	for _, c := range cases {
		msg := mustFail(t, c.doc)
		wantAll(t, msg, c.key, c.line, c.value, "not a duration")
	}
}

func TestRangeErrorsNameKeyAndLine(t *testing.T) {
	msg := mustFail(t, "[model]\ntile = 100\noverlap = 60\n[output]\njpeg_quality = 0\n[backend]\nkind = \"cuda\"\n")
	wantAll(t, msg,
		":2: model.tile = 100", ":3: model.overlap = 60",
		":5: output.jpeg_quality = 0", `:7: backend.kind = "cuda"`)
	msg = mustFail(t, "[retry]\ninitial_backoff = \"1m\"\nmax_backoff = \"2s\"\n")
	wantAll(t, msg, ":3: retry.max_backoff", "shorter than retry.initial_backoff")
	msg = mustFail(t, "[http]\nlisten = \"9464\"\n")
	wantAll(t, msg, ":2: http.listen")
}

// TensorRT is accepted by the file; a binary built without it refuses it at
// start (daemon), where it is known how the binary was built.
func TestTensorRTKeys(t *testing.T) {
	c, err := Parse([]byte("[backend]\nkind = \"tensorrt\"\nengine_dir = \"eng\"\nprecision = \"fp32\"\non_missing_engine = \"fallback\"\nbuild_timeout = \"30m\"\n"), "/etc/h/c.toml")
	if err != nil {
		t.Fatal(err)
	}
	b := c.Backend
	if b.Kind != "tensorrt" || b.EngineDir != "/etc/h/eng" || b.Precision != "fp32" || b.OnMissingEngine != "fallback" || b.BuildTimeout.Duration != 30*time.Minute {
		t.Errorf("backend = %+v", b)
	}
	msg := mustFail(t, "[backend]\nprecision = \"int8\"\non_missing_engine = \"ask\"\nbuild_timeout = \"1s\"\nworkspace_mib = -1\n")
	wantAll(t, msg, ":2: backend.precision", ":3: backend.on_missing_engine", ":4: backend.build_timeout", ":5: backend.workspace_mib")
}

func TestSyntaxErrorHasLine(t *testing.T) {
	msg := mustFail(t, "[spool]\nroot = \"/x\"\n[model\n")
	wantAll(t, msg, "test.toml:3")
}

func TestErrorsAsTyped(t *testing.T) {
	_, err := Parse([]byte("[spool]\nqueue_size = 0\n"), "x.toml")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Key != "spool.queue_size" || es[0].Line != 2 || es[0].Value != "0" {
		t.Fatalf("got %#v", err)
	}
}

func TestDurationsAndRelativePaths(t *testing.T) {
	cfg, err := Parse([]byte("[spool]\nroot = \"spool\"\nsettle = \"250ms\"\n[retry]\nmax_backoff = \"1m30s\"\n"), "/srv/cam/hidiffd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Spool.Root != "/srv/cam/spool" {
		t.Errorf("root %q", cfg.Spool.Root)
	}
	if cfg.Spool.Settle.Duration != 250*time.Millisecond || cfg.Retry.MaxBackoff.Duration != 90*time.Second {
		t.Errorf("durations %v %v", cfg.Spool.Settle, cfg.Retry.MaxBackoff)
	}
	if cfg.Spool.Rescan.Duration != 10*time.Second {
		t.Errorf("default rescan %v", cfg.Spool.Rescan)
	}
}

func TestErrorfUsesPosition(t *testing.T) {
	cfg, err := Parse([]byte("# c\n[model]\ndir = \"/nope\"\n"), "/c.toml")
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Errorf("model.dir", "no such folder").Error()
	if got != `/c.toml:3: model.dir = "/nope": no such folder` {
		t.Errorf("got %q", got)
	}
	got = cfg.Errorf("spool.root", "x").Error()
	if !strings.Contains(got, "(default)") {
		t.Errorf("got %q", got)
	}
}

func TestDiffClassifiesLiveAndRestart(t *testing.T) {
	old := Default()
	n, err := Parse([]byte("[log]\nlevel = \"debug\"\n[spool]\nroot = \"/y\"\n[backend]\nthreads = 2\n"), "/c.toml")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range n.Diff(old) {
		got[c.Key] = c.Live
	}
	want := map[string]bool{"log.level": true, "spool.root": false, "backend.threads": false}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diff %v, want %v", got, want)
	}
}

// TestShippedConfigMatchesDefault keeps config.toml and Default() in step and
// checks that the file documents every key with a comment above it.
func TestShippedConfigMatchesDefault(t *testing.T) {
	path, _ := filepath.Abs("../config.toml")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(doc, path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Diff(Default()); len(d) != 0 {
		t.Errorf("config.toml differs from Default(): %+v", d)
	}
	pos, _ := index(doc)
	lines := strings.Split(string(doc), "\n")
	for _, k := range Keys {
		t.Run(k.Name, func(t *testing.T) {
			p, ok := pos[k.Name]
			if !ok {
				t.Errorf("config.toml does not document %s", k.Name)
				return
			}
			if p.line < 2 || !strings.HasPrefix(strings.TrimSpace(lines[p.line-2]), "#") {
				t.Errorf("config.toml: %s has no comment above it", k.Name)
			}
			live := strings.Contains(commentAbove(lines, p.line), "[live]")
			if live != k.Live {
				t.Errorf("config.toml: %s marked [live]=%v, Keys says %v", k.Name, live, k.Live)
			}
		})
	}
	if len(pos) != len(Keys) {
		t.Errorf("config.toml has %d keys, Keys has %d", len(pos), len(Keys))
	}
}

var commentRe = regexp.MustCompile(`^\s*#`)

func commentAbove(lines []string, line int) string {
	var b strings.Builder
	for i := line - 2; i >= 0 && commentRe.MatchString(lines[i]); i-- {
		b.WriteString(lines[i])
	}
	return b.String()
}

// changeEvery is cfg with every key set to another value of its type, so
// that a test covers keys added later without listing them.
func changeEvery(t *testing.T, cfg *Config) *Config {
	t.Helper()
	next := *cfg
	for _, k := range Keys {
		v := k.value(&next)
		switch {
		case v.Type() == durationType:
			d := v.Interface().(Duration)
			v.Set(reflect.ValueOf(D(d.Duration + time.Second)))
		case v.Kind() == reflect.String:
			v.SetString(v.String() + "x")
		case v.Kind() == reflect.Bool:
			v.SetBool(!v.Bool())
		case v.Kind() == reflect.Interface: // backend.devices
			v.Set(reflect.ValueOf("all"))
		case v.CanInt():
			v.SetInt(v.Int() + 1)
		case v.CanUint():
			v.SetUint(v.Uint() + 1)
		default:
			t.Fatalf("%s: changeEvery does not know type %s", k.Name, v.Type())
		}
	}
	return &next
}

// TestWithLiveCopiesExactlyTheLiveKeys changes every key at once and checks
// that a reload takes the live ones and keeps the others, so that the reload
// tags, Diff and WithLive cannot drift apart (config.toml's [live] marks are
// TestShippedConfigMatchesDefault's).
func TestWithLiveCopiesExactlyTheLiveKeys(t *testing.T) {
	running := Default()
	// backend.devices and backend.workers > 1 exclude each other, so
	// changeEvery's next need not validate: it is never Parsed.
	next := changeEvery(t, running)
	if d := next.Diff(running); len(d) != len(Keys) {
		t.Fatalf("changing every key changes %d in Diff, want all %d: %+v", len(d), len(Keys), d)
	}
	eff := running.WithLive(next)
	live := 0
	for _, k := range Keys {
		t.Run(k.Name, func(t *testing.T) {
			got, old, nw := k.get(eff), k.get(running), k.get(next)
			if k.Live {
				live++
				if got != nw {
					t.Errorf("%s is live but kept %q (want %q)", k.Name, got, nw)
				}
			} else if got != old {
				t.Errorf("%s needs a restart but changed to %q", k.Name, got)
			}
		})
	}
	if live == 0 || live == len(Keys) {
		t.Errorf("%d of %d keys live: the reload tags were not read", live, len(Keys))
	}
}

// TestKeysFromTags: the keys, their reload behaviour and the type a message
// asks for come from Config's fields and tags; a field without a reload tag
// stops the package at once, naming it.
func TestKeysFromTags(t *testing.T) {
	for _, tc := range []struct {
		key  string
		live bool
		kind string
	}{
		{"spool.root", false, "a string (folder)"},
		{"spool.max_pixels", true, "an integer"},
		{"model.seed", true, "a non-negative integer"},
		{"backend.build_timeout", false, `a duration string such as "2h"`},
		{"retry.max_backoff", true, `a duration string such as "2m"`},
		{"gpu.slow_pause", true, `a duration string such as "250ms"`},
		{"output.sidecar", true, "a boolean"},
		{"limits.memory_mib", true, "an integer (MiB)"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			k, ok := keyByName(tc.key)
			if !ok {
				t.Fatalf("no key %s", tc.key)
			}
			if k.Live != tc.live || k.kind != tc.kind {
				t.Errorf("live %v, kind %q; want %v, %q", k.Live, k.kind, tc.live, tc.kind)
			}
		})
	}
	t.Run("missing reload tag", func(t *testing.T) {
		type table struct {
			Size int `toml:"size"`
		}
		type conf struct {
			T table `toml:"t"`
		}
		defer func() {
			if msg, _ := recover().(string); !strings.Contains(msg, "T.Size (t.size) needs a tag reload") {
				t.Errorf("panic %q, want one naming T.Size", msg)
			}
		}()
		keysOf(reflect.TypeFor[conf](), Default())
	})
}

// TestErrorUnwraps: the cause of a configuration error survives for
// errors.Is and errors.As, through Errors too, and the message is the
// same as without it.
func TestErrorUnwraps(t *testing.T) {
	cfg := Default()
	cause := os.ErrNotExist
	e := cfg.Errorf("model.dir", "cannot open: %w", cause)
	if !errors.Is(e, os.ErrNotExist) {
		t.Errorf("errors.Is(%v, os.ErrNotExist) = false", e)
	}
	if want := `model.dir = "/usr/share/hidiffd/models/default" (default): cannot open: file does not exist`; e.Error() != want {
		t.Errorf("message %q, want %q", e.Error(), want)
	}
	if plain := cfg.Errorf("model.dir", "cannot open: %v", cause); errors.Unwrap(plain) != nil {
		t.Errorf("%%v kept a cause: %v", errors.Unwrap(plain))
	}

	_, err := Parse([]byte("[spool]\nsettle = \"soon\"\n[http]\nlisten = \"nocolon\"\n"), "/c.toml")
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "spool.settle" || ce.Line != 2 {
		t.Fatalf("errors.As(%v) = %+v, want the spool.settle error at line 2", err, ce)
	}
	if ce.Err == nil || !strings.Contains(ce.Err.Error(), "soon") {
		t.Errorf("spool.settle's cause %v, want time.ParseDuration's error", ce.Err)
	}
	var ae *net.AddrError
	if !errors.As(err, &ae) {
		t.Errorf("errors.As(%v, *net.AddrError) = false: http.listen's cause is lost", err)
	}
}

// TestOutputMetadataKeys: the metadata keys are booleans; a string or a
// number is refused with the key, the line and what it wants.
func TestOutputMetadataKeys(t *testing.T) {
	cfg, err := Parse([]byte("[output]\nkeep_metadata = false\nkeep_mtime = false\nsidecar = true\n"), "/etc/hidiffd/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Output.KeepMetadata || cfg.Output.KeepMtime || !cfg.Output.Sidecar {
		t.Errorf("parsed %+v", cfg.Output)
	}
	d := Default().Output
	if !d.KeepMetadata || !d.KeepMtime || d.Sidecar {
		t.Errorf("defaults %+v", d)
	}
	for doc, want := range map[string]string{
		"[output]\nsidecar = \"yes\"\n": "config.toml:2: output.sidecar = \"yes\": wrong type: want a boolean, got a TOML string",
		"[output]\nkeep_mtime = 1\n":    "config.toml:2: output.keep_mtime = 1: wrong type: want a boolean",
		"[output]\nkeep_exif = true\n":  "unknown key",
	} {
		t.Run(fmt.Sprintf("%q", doc), func(t *testing.T) {
			_, err := Parse([]byte(doc), "/etc/hidiffd/config.toml")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: %v, want %q", doc, err, want)
			}
		})
	}
}

func TestSpoolInstance(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{"default host", "%h", true},
		{"host and gpu", "%h.gpu1", true},
		{"plain", "cam-west", true},
		{"slash", "a/b", false},
		{"dot first", ".x", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("[spool]\ninstance = \""+tc.value+"\"\n"), "/c.toml")
			if (err == nil) != tc.ok {
				t.Fatalf("instance %q: %v, want ok=%v", tc.value, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "spool.instance") {
				t.Fatalf("error does not name the key: %v", err)
			}
		})
	}
}

// TestWorkerKeys: backend.devices is a list of GPU indices or "all";
// backend.workers counts CPU workers. What is refused names the key, the
// value and the line.
func TestWorkerKeys(t *testing.T) {
	good := []struct {
		name, doc string
		list      []int
		all       bool
		workers   int
	}{
		{"default", "", nil, false, 1},
		{"two GPUs", "[backend]\ndevices = [0, 1]\n", []int{0, 1}, false, 1},
		{"all GPUs", "[backend]\ndevices = \"all\"\n", nil, true, 1},
		{"CPU workers", "[backend]\nkind = \"onnxruntime\"\nworkers = 4\n", nil, false, 4},
	}
	for _, c := range good {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.doc), "/etc/h/c.toml")
			if err != nil {
				t.Fatal(err)
			}
			list, all, err := cfg.Backend.DeviceList()
			if err != nil || !reflect.DeepEqual(list, c.list) || all != c.all || cfg.Backend.Workers != c.workers {
				t.Errorf("devices %v all %v err %v workers %d", list, all, err, cfg.Backend.Workers)
			}
		})
	}
	bad := []struct{ name, doc, want string }{
		{"index out of range", "[backend]\ndevices = [0, 64]\n", ":2: backend.devices = [0, 64]: GPU index 64 is out of range 0..63"},
		{"negative index", "[backend]\ndevices = [-1]\n", ":2: backend.devices = [-1]: GPU index -1 is out of range"},
		{"listed twice", "[backend]\ndevices = [1, 1]\n", ":2: backend.devices = [1, 1]: GPU 1 is listed twice"},
		{"not all", "[backend]\ndevices = \"every\"\n", `:2: backend.devices = "every": want "all" or a list`},
		{"not integers", "[backend]\ndevices = [\"0\"]\n", `:2: backend.devices = ["0"]: 0 is not a GPU index`},
		{"workers zero", "[backend]\nkind = \"onnxruntime\"\nworkers = 0\n", ":3: backend.workers = 0: must be between 1 and 256"},
		{"workers on a GPU", "[backend]\nworkers = 2\n", `:2: backend.workers = 2: more than one worker is for the CPU`},
		{"workers and devices", "[backend]\nkind = \"onnxruntime\"\ndevices = [0]\nworkers = 2\n", ":4: backend.workers = 2: must be 1 when backend.devices is set"},
		{"devices on onnxruntime", "[backend]\nkind = \"onnxruntime\"\ndevices = [0]\n", `:3: backend.devices = [0]: lists GPUs, but backend.kind = "onnxruntime" runs on the CPU`},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			wantAll(t, mustFail(t, c.doc), c.want)
		})
	}
}
