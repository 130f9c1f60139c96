// Package config is the daemon's configuration: the TOML file an operator
// edits, its defaults, strict decoding and validation that name the key and
// the line of every mistake, and the comparison that tells a SIGHUP reload
// which changes apply live and which need a restart.
//
// The documented defaults live twice, here (Default) and in config.toml at
// the repository root; a test keeps the two equal.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
)

// DefaultPath is where the packaged unit expects the configuration.
const DefaultPath = "/etc/hidiffd/config.toml"

// Config is the whole file. Field tags are the TOML key names; Keys below
// lists every key once more with its reload behaviour.
type Config struct {
	Spool    Spool    `toml:"spool"`
	Model    Model    `toml:"model"`
	Backend  Backend  `toml:"backend"`
	Output   Output   `toml:"output"`
	Log      Log      `toml:"log"`
	HTTP     HTTP     `toml:"http"`
	Retry    Retry    `toml:"retry"`
	Shutdown Shutdown `toml:"shutdown"`
	GPU      GPU      `toml:"gpu"`
	Limits   Limits   `toml:"limits"`

	// path is the file this came from ("" for Default()); positions maps a
	// dotted key to where it was written, so later checks (a model folder
	// that does not exist, say) can point at the line too.
	path      string
	positions map[string]position
}

// Spool is the state-folder tree and intake.
type Spool struct {
	Root          string   `toml:"root"`
	KeepOriginals bool     `toml:"keep_originals"`
	Settle        Duration `toml:"settle"`
	Rescan        Duration `toml:"rescan"`
	QueueSize     int      `toml:"queue_size"`
	MaxPixels     int64    `toml:"max_pixels"`
}

// Model is the network and how it is applied.
type Model struct {
	Dir     string `toml:"dir"`
	Seed    uint64 `toml:"seed"`
	Tile    int    `toml:"tile"`
	Overlap int    `toml:"overlap"`
}

// Backend picks the inference runtime.
type Backend struct {
	Kind               string `toml:"kind"`
	OnnxruntimeLibrary string `toml:"onnxruntime_library"`
	Threads            int    `toml:"threads"`

	// Several workers in one daemon (one pipeline and backend each, all
	// fed from the one intake queue). Devices is what the file holds:
	// an empty array (one worker, on gpu.device), an array of GPU indices,
	// or the string "all"; DeviceList reads it. Workers is the number of
	// CPU workers (backend.kind "onnxruntime"), sharing backend.threads.
	Devices any `toml:"devices"`
	Workers int `toml:"workers"`

	// TensorRT (kind "tensorrt", or "auto" on a GPU).
	TensorRTLibrary string   `toml:"tensorrt_library"`
	EngineDir       string   `toml:"engine_dir"`
	Precision       string   `toml:"precision"`
	OnMissingEngine string   `toml:"on_missing_engine"`
	BuildTimeout    Duration `toml:"build_timeout"`
	WorkspaceMiB    int      `toml:"workspace_mib"`
}

// Output controls encoding and what an output carries besides pixels.
type Output struct {
	JPEGQuality  int  `toml:"jpeg_quality"`
	KeepMetadata bool `toml:"keep_metadata"`
	KeepMtime    bool `toml:"keep_mtime"`
	Sidecar      bool `toml:"sidecar"`
}

// Log controls logging.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// HTTP is the metrics and health endpoint.
type HTTP struct {
	Listen string `toml:"listen"`
}

// Retry is the backoff for transient output errors (disk full, read-only).
type Retry struct {
	InitialBackoff Duration `toml:"initial_backoff"`
	MaxBackoff     Duration `toml:"max_backoff"`
}

// Shutdown bounds the drain on SIGTERM.
type Shutdown struct {
	DrainTimeout Duration `toml:"drain_timeout"`
}

// GPU is the telemetry monitor and the throttle policy (package gpu).
type GPU struct {
	Monitor             string   `toml:"monitor"`
	Device              int      `toml:"device"`
	Poll                Duration `toml:"poll"`
	TempPauseC          int      `toml:"temp_pause_c"`
	TempResumeC         int      `toml:"temp_resume_c"`
	SlowdownMarginC     int      `toml:"slowdown_margin_c"`
	MinFreeMiB          int      `toml:"min_free_mib"`
	FreeHysteresisMiB   int      `toml:"free_hysteresis_mib"`
	ShrinkFreeMiB       int      `toml:"shrink_free_mib"`
	MinTile             int      `toml:"min_tile"`
	MaxOtherUtilPercent int      `toml:"max_other_util_percent"`
	MaxOtherMemoryMiB   int      `toml:"max_other_memory_mib"`
	OnThermalEvent      string   `toml:"on_thermal_event"`
	OnPowerEvent        string   `toml:"on_power_event"`
	OnHWSlowdown        string   `toml:"on_hw_slowdown"`
	SlowPause           Duration `toml:"slow_pause"`
	ResumeHold          Duration `toml:"resume_hold"`
}

// Limits bound the resources the daemon plans for.
type Limits struct {
	// MemoryMiB is the memory budget: what the model and runtime hold at
	// start plus the estimated peak of every frame in flight (from its
	// header) stays below it. A frame that would not fit waits for the
	// frames ahead of it; one that cannot fit even alone goes to failed/.
	MemoryMiB int `toml:"memory_mib"`
}

// Duration is written as a string such as "2s" or "1m30s". Decoding only
// keeps the text; Validate parses it, so a bad duration (or a bare number,
// which go-toml would otherwise hand over without a position) is reported
// with its key and line like every other mistake.
type Duration struct {
	time.Duration
	text string
	set  bool
}

// D makes a Duration from a time.Duration (for defaults and tests).
func D(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	d.text, d.set = string(b), true
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Default is the configuration used for every key the file leaves out. Keep
// config.toml in step (TestShippedConfigMatchesDefault).
func Default() *Config {
	return &Config{
		Spool: Spool{
			Root:          "/var/lib/hidiffd/spool",
			KeepOriginals: true,
			Settle:        D(time.Second),
			Rescan:        D(10 * time.Second),
			QueueSize:     16,
			MaxPixels:     50_000_000,
		},
		Model: Model{
			Dir:     "/usr/share/hidiffd/models/default",
			Seed:    0,
			Tile:    384,
			Overlap: 32,
		},
		Backend: Backend{Kind: "auto", OnnxruntimeLibrary: "", Threads: 0, Devices: []any{}, Workers: 1,
			TensorRTLibrary: "", EngineDir: "/var/lib/hidiffd/engines", Precision: "fp16",
			OnMissingEngine: "build", BuildTimeout: D(2 * time.Hour), WorkspaceMiB: 0},
		Output:   Output{JPEGQuality: 95, KeepMetadata: true, KeepMtime: true, Sidecar: false},
		Log:      Log{Level: "info", Format: "auto"},
		HTTP:     HTTP{Listen: "127.0.0.1:9464"},
		Retry:    Retry{InitialBackoff: D(time.Second), MaxBackoff: D(2 * time.Minute)},
		Shutdown: Shutdown{DrainTimeout: D(30 * time.Second)},
		GPU: GPU{
			Monitor: "auto", Device: 0, Poll: D(time.Second),
			TempPauseC: 85, TempResumeC: 75, SlowdownMarginC: 3,
			MinFreeMiB: 512, FreeHysteresisMiB: 256, ShrinkFreeMiB: 2048, MinTile: 128,
			MaxOtherUtilPercent: 0, MaxOtherMemoryMiB: 0,
			OnThermalEvent: "wait", OnPowerEvent: "ignore", OnHWSlowdown: "wait",
			SlowPause: D(250 * time.Millisecond), ResumeHold: D(5 * time.Second),
		},
		// An 8 GB Jetson shares its memory between the CPU, the GPU, the
		// system and the camera pipeline: 3 GiB is the daemon's share.
		Limits: Limits{MemoryMiB: 3072},
	}
}

// Error is one configuration mistake: the key, the value as written, where,
// and what is wrong.
type Error struct {
	File   string
	Line   int // 0 when the key is not in the file (a default, or a whole-file error)
	Key    string
	Value  string
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Value != "" {
			b.WriteString(" = " + e.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Errors is every mistake found in one file; all are reported at once so an
// operator fixes the file in one round.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Load reads, strictly decodes and validates a file. Relative paths inside it
// are taken relative to the file's folder, so a development config next to a
// checkout works from any working directory.
func Load(path string) (*Config, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return Parse(doc, abs)
}

// Parse decodes doc (named path in messages; relative paths resolve against
// its folder) over the defaults and validates the result.
func Parse(doc []byte, path string) (*Config, error) {
	cfg := Default()
	cfg.path = path
	pos, perr := index(doc)
	cfg.positions = pos

	dec := toml.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, cfg.decodeError(doc, err)
	}
	if perr != nil { // the decoder accepted what our indexer did not: still say so
		return nil, &Error{File: path, Reason: perr.Error()}
	}
	if err := cfg.resolvePaths(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Path is the file the configuration came from ("" for defaults).
func (c *Config) Path() string { return c.path }

// Errorf builds an Error for key with the position and text recorded when
// the file was read; the daemon uses it for checks that need the machine
// (a model folder that is missing, a library that does not load).
func (c *Config) Errorf(key, format string, args ...any) *Error {
	e := &Error{File: c.path, Key: key, Reason: fmt.Sprintf(format, args...)}
	if p, ok := c.positions[key]; ok {
		e.Line, e.Value = p.line, p.value
	} else if v, ok := c.lookup(key); ok {
		e.Value = v + " (default)"
	}
	return e
}

func (c *Config) decodeError(doc []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		out := make(Errors, 0, len(strict.Errors))
		for i := range strict.Errors {
			de := &strict.Errors[i]
			line, _ := de.Position()
			key := strings.Join(de.Key(), ".")
			e := &Error{File: c.path, Line: line, Key: key, Value: valueOnLine(doc, line), Reason: "unknown key" + suggest(key)}
			if strings.HasPrefix(strings.TrimSpace(lineText(doc, line)), "[") {
				e.Key, e.Reason = "["+key+"]", "unknown table"
			}
			out = append(out, e)
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		key := strings.Join(de.Key(), ".")
		e := &Error{File: c.path, Line: line, Key: key, Reason: typeReason(de.Error(), key)}
		if key != "" {
			e.Value = valueOnLine(doc, line)
		}
		return e
	}
	return &Error{File: c.path, Reason: err.Error()}
}

// typeReason rewrites go-toml's Go-flavoured message ("cannot decode TOML
// string into struct field ...Queue of type int") into the words an
// operator needs: what the key wants.
func typeReason(msg, key string) string {
	msg = strings.TrimPrefix(msg, "toml: ")
	if !strings.HasPrefix(msg, "cannot decode TOML ") {
		return msg
	}
	got := strings.Fields(strings.TrimPrefix(msg, "cannot decode TOML "))
	want := "a different type"
	if k, ok := keyByName(key); ok {
		want = k.kind
	}
	if len(got) > 0 {
		return fmt.Sprintf("wrong type: want %s, got a TOML %s", want, got[0])
	}
	return "wrong type: want " + want
}

// suggest names a known key when an unknown one is a near miss of it in the
// same table or sits in the wrong table.
func suggest(key string) string {
	leaf := key[strings.LastIndex(key, ".")+1:]
	for _, k := range Keys {
		if strings.HasSuffix(k.Name, "."+leaf) && k.Name != key {
			return fmt.Sprintf(" (did you mean %s?)", k.Name)
		}
	}
	return ""
}

func (c *Config) resolvePaths() error {
	base := filepath.Dir(c.path)
	for _, p := range []*string{&c.Spool.Root, &c.Model.Dir, &c.Backend.OnnxruntimeLibrary, &c.Backend.EngineDir} {
		if *p != "" && !filepath.IsAbs(*p) && c.path != "" {
			*p = filepath.Join(base, *p)
		}
	}
	return nil
}

// Validate checks ranges and formats and parses durations. Every problem is
// returned, each naming its key.
func (c *Config) Validate() error {
	var errs Errors
	bad := func(key, format string, args ...any) { errs = append(errs, c.Errorf(key, format, args...)) }

	dur := func(key string, d *Duration, min, max time.Duration) {
		if d.set {
			v, err := time.ParseDuration(d.text)
			if err != nil {
				bad(key, "not a duration: write a string such as \"500ms\", \"2s\" or \"1m30s\"")
				return
			}
			d.Duration, d.set = v, false
		}
		if d.Duration < min || d.Duration > max {
			bad(key, "must be between %v and %v", min, max)
		}
	}
	dur("spool.settle", &c.Spool.Settle, 10*time.Millisecond, 10*time.Minute)
	dur("spool.rescan", &c.Spool.Rescan, 100*time.Millisecond, time.Hour)
	dur("retry.initial_backoff", &c.Retry.InitialBackoff, 10*time.Millisecond, time.Hour)
	dur("retry.max_backoff", &c.Retry.MaxBackoff, 10*time.Millisecond, 24*time.Hour)
	dur("shutdown.drain_timeout", &c.Shutdown.DrainTimeout, 0, time.Hour)
	dur("backend.build_timeout", &c.Backend.BuildTimeout, time.Minute, 24*time.Hour)
	dur("gpu.poll", &c.GPU.Poll, 100*time.Millisecond, time.Minute)
	dur("gpu.slow_pause", &c.GPU.SlowPause, 10*time.Millisecond, time.Minute)
	dur("gpu.resume_hold", &c.GPU.ResumeHold, 0, 10*time.Minute)
	if c.Retry.MaxBackoff.Duration < c.Retry.InitialBackoff.Duration {
		bad("retry.max_backoff", "must not be shorter than retry.initial_backoff (%v)", c.Retry.InitialBackoff.Duration)
	}

	if c.Spool.Root == "" {
		bad("spool.root", "must name a folder")
	}
	if c.Spool.QueueSize < 1 || c.Spool.QueueSize > 100_000 {
		bad("spool.queue_size", "must be between 1 and 100000")
	}
	if c.Spool.MaxPixels < 1 || c.Spool.MaxPixels > 1_000_000_000 {
		bad("spool.max_pixels", "must be between 1 and 1000000000")
	}

	if c.Model.Dir == "" {
		bad("model.dir", "must name a folder")
	}
	if c.Model.Tile != 0 && (c.Model.Tile < 64 || c.Model.Tile > 4096 || c.Model.Tile%16 != 0) {
		bad("model.tile", "must be 0 (whole image) or a multiple of 16 between 64 and 4096")
	}
	if c.Model.Overlap < 0 || (c.Model.Tile > 0 && c.Model.Overlap*2 >= c.Model.Tile) {
		bad("model.overlap", "must be at least 0 and less than half of model.tile (%d)", c.Model.Tile)
	}

	// "tensorrt" is accepted here even in a binary built without it: the
	// daemon refuses it at start, naming this key and line, with the
	// rebuild instruction (this package does not know how it was built).
	switch c.Backend.Kind {
	case "auto", "onnxruntime", "tensorrt":
	default:
		bad("backend.kind", "must be \"auto\", \"onnxruntime\" or \"tensorrt\"")
	}
	switch c.Backend.Precision {
	case "fp16", "fp32":
	default:
		bad("backend.precision", "must be \"fp16\" or \"fp32\"")
	}
	switch c.Backend.OnMissingEngine {
	case "build", "fallback":
	default:
		bad("backend.on_missing_engine", "must be \"build\" or \"fallback\"")
	}
	if c.Backend.EngineDir == "" {
		bad("backend.engine_dir", "must name a folder")
	}
	if c.Backend.WorkspaceMiB < 0 || c.Backend.WorkspaceMiB > 1<<20 {
		bad("backend.workspace_mib", "must be between 0 (TensorRT's default) and 1048576")
	}
	if c.Backend.Threads < 0 || c.Backend.Threads > 1024 {
		bad("backend.threads", "must be between 0 (runtime default) and 1024")
	}
	devices, _, derr := c.Backend.DeviceList()
	if derr != nil {
		bad("backend.devices", "%v", derr)
	}
	switch {
	case c.Backend.Workers < 1 || c.Backend.Workers > 256:
		bad("backend.workers", "must be between 1 and 256")
	case c.Backend.Workers > 1 && c.Backend.Kind != "onnxruntime":
		bad("backend.workers", "more than one worker is for the CPU: it needs backend.kind = \"onnxruntime\" "+
			"(on GPUs, list them in backend.devices: one worker per GPU)")
	case c.Backend.Workers > 1 && (len(devices) > 0 || derr == nil && c.Backend.devicesAll()):
		bad("backend.workers", "must be 1 when backend.devices is set (one worker per GPU)")
	}

	if c.Output.JPEGQuality < 1 || c.Output.JPEGQuality > 100 {
		bad("output.jpeg_quality", "must be between 1 and 100")
	}

	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be \"trace\", \"debug\", \"info\", \"warn\" or \"error\"")
	}
	switch c.Log.Format {
	case "auto", "console", "json":
	default:
		bad("log.format", "must be \"auto\", \"console\" or \"json\"")
	}

	if c.HTTP.Listen != "" {
		host, port, err := net.SplitHostPort(c.HTTP.Listen)
		if err != nil {
			bad("http.listen", "must be host:port (or \"\" for no HTTP server): %v", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("http.listen", "port must be a number between 0 and 65535")
		} else if host != "" && net.ParseIP(host) == nil && host != "localhost" {
			bad("http.listen", "host must be an IP address or \"localhost\"")
		}
	}

	c.validateGPU(bad)

	if c.Limits.MemoryMiB < 256 || c.Limits.MemoryMiB > 1<<20 {
		bad("limits.memory_mib", "must be between 256 and 1048576 (MiB)")
	}

	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (c *Config) validateGPU(bad func(key, format string, args ...any)) {
	g := &c.GPU
	switch g.Monitor {
	case "auto", "nvml", "jetson", "none":
	default:
		bad("gpu.monitor", "must be \"auto\", \"nvml\", \"jetson\" or \"none\"")
	}
	if g.Device < 0 || g.Device > 63 {
		bad("gpu.device", "must be between 0 and 63")
	}
	if g.TempPauseC < 40 || g.TempPauseC > 120 {
		bad("gpu.temp_pause_c", "must be between 40 and 120")
	}
	if g.TempResumeC < 20 || g.TempResumeC >= g.TempPauseC {
		bad("gpu.temp_resume_c", "must be at least 20 and below gpu.temp_pause_c (%d)", g.TempPauseC)
	}
	if g.SlowdownMarginC < 0 || g.SlowdownMarginC > 30 {
		bad("gpu.slowdown_margin_c", "must be between 0 and 30")
	}
	const maxMiB = 1 << 20 // 1 TiB
	if g.MinFreeMiB < 0 || g.MinFreeMiB > maxMiB {
		bad("gpu.min_free_mib", "must be between 0 and %d", maxMiB)
	}
	if g.FreeHysteresisMiB < 0 || g.FreeHysteresisMiB > maxMiB {
		bad("gpu.free_hysteresis_mib", "must be between 0 and %d", maxMiB)
	}
	if g.ShrinkFreeMiB != 0 && (g.ShrinkFreeMiB <= g.MinFreeMiB || g.ShrinkFreeMiB > maxMiB) {
		bad("gpu.shrink_free_mib", "must be 0 (never shrink) or above gpu.min_free_mib (%d), at most %d", g.MinFreeMiB, maxMiB)
	}
	if g.MinTile < 64 || g.MinTile > 4096 || g.MinTile%16 != 0 {
		bad("gpu.min_tile", "must be a multiple of 16 between 64 and 4096")
	}
	if g.MaxOtherUtilPercent < 0 || g.MaxOtherUtilPercent > 100 {
		bad("gpu.max_other_util_percent", "must be between 0 (no limit) and 100")
	}
	if g.MaxOtherMemoryMiB < 0 || g.MaxOtherMemoryMiB > maxMiB {
		bad("gpu.max_other_memory_mib", "must be between 0 (no limit) and %d", maxMiB)
	}
	for _, e := range []struct{ key, v string }{
		{"gpu.on_thermal_event", g.OnThermalEvent}, {"gpu.on_power_event", g.OnPowerEvent}, {"gpu.on_hw_slowdown", g.OnHWSlowdown},
	} {
		switch e.v {
		case "wait", "slow", "ignore":
		default:
			bad(e.key, "must be \"wait\", \"slow\" or \"ignore\"")
		}
	}
}

// Key describes one configuration key: its dotted name, the type an operator
// writes, whether a SIGHUP applies it without a restart, how to read it as
// text (for diffs and messages) and how to copy it from one Config to
// another (for WithLive).
type Key struct {
	Name string
	kind string
	Live bool
	get  func(*Config) string
	copy func(dst, src *Config)
}

// Keys is every key in the file. A test checks that config.toml documents
// each of them.
var Keys = []Key{
	{"spool.root", "a string (folder)", false,
		func(c *Config) string { return c.Spool.Root },
		func(d, s *Config) { d.Spool.Root = s.Spool.Root }},
	{"spool.keep_originals", "a boolean", false,
		func(c *Config) string { return strconv.FormatBool(c.Spool.KeepOriginals) },
		func(d, s *Config) { d.Spool.KeepOriginals = s.Spool.KeepOriginals }},
	{"spool.settle", "a duration string such as \"1s\"", false,
		func(c *Config) string { return c.Spool.Settle.String() },
		func(d, s *Config) { d.Spool.Settle = s.Spool.Settle }},
	{"spool.rescan", "a duration string such as \"10s\"", false,
		func(c *Config) string { return c.Spool.Rescan.String() },
		func(d, s *Config) { d.Spool.Rescan = s.Spool.Rescan }},
	{"spool.queue_size", "an integer", false,
		func(c *Config) string { return strconv.Itoa(c.Spool.QueueSize) },
		func(d, s *Config) { d.Spool.QueueSize = s.Spool.QueueSize }},
	{"spool.max_pixels", "an integer", true,
		func(c *Config) string { return strconv.FormatInt(c.Spool.MaxPixels, 10) },
		func(d, s *Config) { d.Spool.MaxPixels = s.Spool.MaxPixels }},
	{"model.dir", "a string (folder)", false,
		func(c *Config) string { return c.Model.Dir },
		func(d, s *Config) { d.Model.Dir = s.Model.Dir }},
	{"model.seed", "a non-negative integer", true,
		func(c *Config) string { return strconv.FormatUint(c.Model.Seed, 10) },
		func(d, s *Config) { d.Model.Seed = s.Model.Seed }},
	{"model.tile", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.Model.Tile) },
		func(d, s *Config) { d.Model.Tile = s.Model.Tile }},
	{"model.overlap", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.Model.Overlap) },
		func(d, s *Config) { d.Model.Overlap = s.Model.Overlap }},
	{"backend.kind", "a string", false,
		func(c *Config) string { return c.Backend.Kind },
		func(d, s *Config) { d.Backend.Kind = s.Backend.Kind }},
	{"backend.onnxruntime_library", "a string (file)", false,
		func(c *Config) string { return c.Backend.OnnxruntimeLibrary },
		func(d, s *Config) { d.Backend.OnnxruntimeLibrary = s.Backend.OnnxruntimeLibrary }},
	{"backend.threads", "an integer", false,
		func(c *Config) string { return strconv.Itoa(c.Backend.Threads) },
		func(d, s *Config) { d.Backend.Threads = s.Backend.Threads }},
	{"backend.devices", "an array of GPU indices or \"all\"", false,
		func(c *Config) string { return c.Backend.devicesString() },
		func(d, s *Config) { d.Backend.Devices = s.Backend.Devices }},
	{"backend.workers", "an integer", false,
		func(c *Config) string { return strconv.Itoa(c.Backend.Workers) },
		func(d, s *Config) { d.Backend.Workers = s.Backend.Workers }},
	{"backend.tensorrt_library", "a string (file or ':'-separated files)", false,
		func(c *Config) string { return c.Backend.TensorRTLibrary },
		func(d, s *Config) { d.Backend.TensorRTLibrary = s.Backend.TensorRTLibrary }},
	{"backend.engine_dir", "a string (folder)", false,
		func(c *Config) string { return c.Backend.EngineDir },
		func(d, s *Config) { d.Backend.EngineDir = s.Backend.EngineDir }},
	{"backend.precision", "a string", false,
		func(c *Config) string { return c.Backend.Precision },
		func(d, s *Config) { d.Backend.Precision = s.Backend.Precision }},
	{"backend.on_missing_engine", "a string", false,
		func(c *Config) string { return c.Backend.OnMissingEngine },
		func(d, s *Config) { d.Backend.OnMissingEngine = s.Backend.OnMissingEngine }},
	{"backend.build_timeout", "a duration string such as \"2h\"", false,
		func(c *Config) string { return c.Backend.BuildTimeout.String() },
		func(d, s *Config) { d.Backend.BuildTimeout = s.Backend.BuildTimeout }},
	{"backend.workspace_mib", "an integer", false,
		func(c *Config) string { return strconv.Itoa(c.Backend.WorkspaceMiB) },
		func(d, s *Config) { d.Backend.WorkspaceMiB = s.Backend.WorkspaceMiB }},
	{"output.jpeg_quality", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.Output.JPEGQuality) },
		func(d, s *Config) { d.Output.JPEGQuality = s.Output.JPEGQuality }},
	{"output.keep_metadata", "a boolean", true,
		func(c *Config) string { return strconv.FormatBool(c.Output.KeepMetadata) },
		func(d, s *Config) { d.Output.KeepMetadata = s.Output.KeepMetadata }},
	{"output.keep_mtime", "a boolean", true,
		func(c *Config) string { return strconv.FormatBool(c.Output.KeepMtime) },
		func(d, s *Config) { d.Output.KeepMtime = s.Output.KeepMtime }},
	{"output.sidecar", "a boolean", true,
		func(c *Config) string { return strconv.FormatBool(c.Output.Sidecar) },
		func(d, s *Config) { d.Output.Sidecar = s.Output.Sidecar }},
	{"log.level", "a string", true,
		func(c *Config) string { return c.Log.Level },
		func(d, s *Config) { d.Log.Level = s.Log.Level }},
	{"log.format", "a string", false,
		func(c *Config) string { return c.Log.Format },
		func(d, s *Config) { d.Log.Format = s.Log.Format }},
	{"http.listen", "a string (host:port)", false,
		func(c *Config) string { return c.HTTP.Listen },
		func(d, s *Config) { d.HTTP.Listen = s.HTTP.Listen }},
	{"retry.initial_backoff", "a duration string such as \"1s\"", true,
		func(c *Config) string { return c.Retry.InitialBackoff.String() },
		func(d, s *Config) { d.Retry.InitialBackoff = s.Retry.InitialBackoff }},
	{"retry.max_backoff", "a duration string such as \"2m\"", true,
		func(c *Config) string { return c.Retry.MaxBackoff.String() },
		func(d, s *Config) { d.Retry.MaxBackoff = s.Retry.MaxBackoff }},
	{"shutdown.drain_timeout", "a duration string such as \"30s\"", true,
		func(c *Config) string { return c.Shutdown.DrainTimeout.String() },
		func(d, s *Config) { d.Shutdown.DrainTimeout = s.Shutdown.DrainTimeout }},
	{"gpu.monitor", "a string", false,
		func(c *Config) string { return c.GPU.Monitor },
		func(d, s *Config) { d.GPU.Monitor = s.GPU.Monitor }},
	{"gpu.device", "an integer", false,
		func(c *Config) string { return strconv.Itoa(c.GPU.Device) },
		func(d, s *Config) { d.GPU.Device = s.GPU.Device }},
	{"gpu.poll", "a duration string such as \"1s\"", true,
		func(c *Config) string { return c.GPU.Poll.String() },
		func(d, s *Config) { d.GPU.Poll = s.GPU.Poll }},
	{"gpu.temp_pause_c", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.TempPauseC) },
		func(d, s *Config) { d.GPU.TempPauseC = s.GPU.TempPauseC }},
	{"gpu.temp_resume_c", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.TempResumeC) },
		func(d, s *Config) { d.GPU.TempResumeC = s.GPU.TempResumeC }},
	{"gpu.slowdown_margin_c", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.SlowdownMarginC) },
		func(d, s *Config) { d.GPU.SlowdownMarginC = s.GPU.SlowdownMarginC }},
	{"gpu.min_free_mib", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.MinFreeMiB) },
		func(d, s *Config) { d.GPU.MinFreeMiB = s.GPU.MinFreeMiB }},
	{"gpu.free_hysteresis_mib", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.FreeHysteresisMiB) },
		func(d, s *Config) { d.GPU.FreeHysteresisMiB = s.GPU.FreeHysteresisMiB }},
	{"gpu.shrink_free_mib", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.ShrinkFreeMiB) },
		func(d, s *Config) { d.GPU.ShrinkFreeMiB = s.GPU.ShrinkFreeMiB }},
	{"gpu.min_tile", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.MinTile) },
		func(d, s *Config) { d.GPU.MinTile = s.GPU.MinTile }},
	{"gpu.max_other_util_percent", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.MaxOtherUtilPercent) },
		func(d, s *Config) { d.GPU.MaxOtherUtilPercent = s.GPU.MaxOtherUtilPercent }},
	{"gpu.max_other_memory_mib", "an integer", true,
		func(c *Config) string { return strconv.Itoa(c.GPU.MaxOtherMemoryMiB) },
		func(d, s *Config) { d.GPU.MaxOtherMemoryMiB = s.GPU.MaxOtherMemoryMiB }},
	{"gpu.on_thermal_event", "a string", true,
		func(c *Config) string { return c.GPU.OnThermalEvent },
		func(d, s *Config) { d.GPU.OnThermalEvent = s.GPU.OnThermalEvent }},
	{"gpu.on_power_event", "a string", true,
		func(c *Config) string { return c.GPU.OnPowerEvent },
		func(d, s *Config) { d.GPU.OnPowerEvent = s.GPU.OnPowerEvent }},
	{"gpu.on_hw_slowdown", "a string", true,
		func(c *Config) string { return c.GPU.OnHWSlowdown },
		func(d, s *Config) { d.GPU.OnHWSlowdown = s.GPU.OnHWSlowdown }},
	{"gpu.slow_pause", "a duration string such as \"250ms\"", true,
		func(c *Config) string { return c.GPU.SlowPause.String() },
		func(d, s *Config) { d.GPU.SlowPause = s.GPU.SlowPause }},
	{"gpu.resume_hold", "a duration string such as \"5s\"", true,
		func(c *Config) string { return c.GPU.ResumeHold.String() },
		func(d, s *Config) { d.GPU.ResumeHold = s.GPU.ResumeHold }},
	{"limits.memory_mib", "an integer (MiB)", true,
		func(c *Config) string { return strconv.Itoa(c.Limits.MemoryMiB) },
		func(d, s *Config) { d.Limits.MemoryMiB = s.Limits.MemoryMiB }},
}

func keyByName(name string) (Key, bool) {
	for _, k := range Keys {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}

func (c *Config) lookup(name string) (string, bool) {
	if k, ok := keyByName(name); ok {
		return strconv.Quote(k.get(c)), true
	}
	return "", false
}

// Change is one key whose value differs between two configurations.
type Change struct {
	Key      string
	Old, New string
	Live     bool // applied by a reload; false: needs a restart
}

// Diff lists the keys whose values differ from old to c, in Keys order.
func (c *Config) Diff(old *Config) []Change {
	var out []Change
	for _, k := range Keys {
		o, n := k.get(old), k.get(c)
		if o != n {
			out = append(out, Change{Key: k.Name, Old: o, New: n, Live: k.Live})
		}
	}
	return out
}

// WithLive is the configuration a reload runs with: c (the running one) with
// every live key taken from next, and every restart-only key kept, so the
// process never believes it runs with a spool root or model it has not
// opened. Positions come from next, the file now on disk.
func (c *Config) WithLive(next *Config) *Config {
	out := *c
	for _, k := range Keys {
		if k.Live {
			k.copy(&out, next)
		}
	}
	out.path, out.positions = next.path, next.positions
	return &out
}

// MaxDevice is the highest GPU index a configuration may name.
const MaxDevice = 63

// DeviceList reads backend.devices: the GPU indices listed (none: one
// worker on gpu.device), or all = true for "all" (the daemon counts the
// GPUs at start). An error says what is wrong with the value.
func (b Backend) DeviceList() (list []int, all bool, err error) {
	switch v := b.Devices.(type) {
	case nil:
		return nil, false, nil
	case string:
		if v != "all" {
			return nil, false, fmt.Errorf("want \"all\" or a list of GPU indices such as [0, 1]")
		}
		return nil, true, nil
	case []any:
		seen := map[int]bool{}
		for _, e := range v {
			n, ok := e.(int64)
			if !ok {
				return nil, false, fmt.Errorf("%v is not a GPU index: want \"all\" or a list of integers such as [0, 1]", e)
			}
			if n < 0 || n > MaxDevice {
				return nil, false, fmt.Errorf("GPU index %d is out of range 0..%d", n, MaxDevice)
			}
			if seen[int(n)] {
				return nil, false, fmt.Errorf("GPU %d is listed twice", n)
			}
			seen[int(n)] = true
			list = append(list, int(n))
		}
		return list, false, nil
	case []int:
		return b.devicesFromInts(v)
	}
	return nil, false, fmt.Errorf("want \"all\" or a list of GPU indices such as [0, 1]")
}

// devicesFromInts checks a list set from Go (tests, commands) rather than
// decoded from TOML.
func (b Backend) devicesFromInts(v []int) ([]int, bool, error) {
	as := make([]any, len(v))
	for i, n := range v {
		as[i] = int64(n)
	}
	return Backend{Devices: as}.DeviceList()
}

func (b Backend) devicesAll() bool { s, ok := b.Devices.(string); return ok && s == "all" }

// devicesString is backend.devices as the key table shows it.
func (b Backend) devicesString() string {
	if b.devicesAll() {
		return "all"
	}
	list, _, err := b.DeviceList()
	if err != nil {
		return fmt.Sprint(b.Devices)
	}
	parts := make([]string, len(list))
	for i, n := range list {
		parts[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
