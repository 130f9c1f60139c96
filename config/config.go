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

// Config is the whole file. Each key is declared once, as a field of its
// table with its tags (read by Keys, keys.go): `toml` is its name,
// `reload` whether a SIGHUP applies it ("live") or it needs a restart
// ("restart"), and `note`, optional, what the value names, for the type a
// message asks for ("folder": "want a string (folder)"). A new key also
// needs its default (Default), its checks (Validate) and its line in
// config.toml (which TestShippedConfigMatchesDefault enforces).
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
	Root          string   `toml:"root" reload:"restart" note:"folder"`
	KeepOriginals bool     `toml:"keep_originals" reload:"restart"`
	Settle        Duration `toml:"settle" reload:"restart"`
	Rescan        Duration `toml:"rescan" reload:"restart"`
	QueueSize     int      `toml:"queue_size" reload:"restart"`
	// Instance, Lease and LeaseMargin: several daemons on one spool
	// (README "Scaling out").
	Instance    string   `toml:"instance" reload:"restart" note:"folder name; %h: the host's short name"`
	Lease       Duration `toml:"lease" reload:"restart"`
	LeaseMargin Duration `toml:"lease_margin" reload:"restart"`
	MaxPixels   int64    `toml:"max_pixels" reload:"live"`
}

// Model is the network and how it is applied.
type Model struct {
	Dir     string `toml:"dir" reload:"restart" note:"folder"`
	Seed    uint64 `toml:"seed" reload:"live"`
	Tile    int    `toml:"tile" reload:"live"`
	Overlap int    `toml:"overlap" reload:"live"`
}

// Backend picks the inference runtime.
type Backend struct {
	Kind               string `toml:"kind" reload:"restart"`
	OnnxruntimeLibrary string `toml:"onnxruntime_library" reload:"restart" note:"file"`
	Threads            int    `toml:"threads" reload:"restart"`

	// Several workers in one daemon (one pipeline and backend each, all
	// fed from the one intake queue). Devices is what the file holds:
	// an empty array (one worker, on gpu.device), an array of GPU indices,
	// or the string "all"; DeviceList reads it. Workers is the number of
	// CPU workers (backend.kind "onnxruntime"), sharing backend.threads.
	Devices any `toml:"devices" reload:"restart" note:"a list of GPU indices such as [0, 1], or \"all\""`
	Workers int `toml:"workers" reload:"restart"`

	// TensorRT (kind "tensorrt", or "auto" on a GPU).
	TensorRTLibrary string   `toml:"tensorrt_library" reload:"restart" note:"file or ':'-separated files"`
	EngineDir       string   `toml:"engine_dir" reload:"restart" note:"folder"`
	Precision       string   `toml:"precision" reload:"restart"`
	OnMissingEngine string   `toml:"on_missing_engine" reload:"restart"`
	BuildTimeout    Duration `toml:"build_timeout" reload:"restart"`
	WorkspaceMiB    int      `toml:"workspace_mib" reload:"restart"`
}

// Output controls encoding and what an output carries besides pixels.
type Output struct {
	JPEGQuality  int  `toml:"jpeg_quality" reload:"live"`
	KeepMetadata bool `toml:"keep_metadata" reload:"live"`
	KeepMtime    bool `toml:"keep_mtime" reload:"live"`
	Sidecar      bool `toml:"sidecar" reload:"live"`
}

// Log controls logging.
type Log struct {
	Level  string `toml:"level" reload:"live"`
	Format string `toml:"format" reload:"restart"`
}

// HTTP is the metrics and health endpoint.
type HTTP struct {
	Listen string `toml:"listen" reload:"restart" note:"host:port"`
}

// Retry is the backoff for transient output errors (disk full, read-only).
type Retry struct {
	InitialBackoff Duration `toml:"initial_backoff" reload:"live"`
	MaxBackoff     Duration `toml:"max_backoff" reload:"live"`
}

// Shutdown bounds the drain on SIGTERM.
type Shutdown struct {
	DrainTimeout Duration `toml:"drain_timeout" reload:"live"`
}

// GPU is the telemetry monitor and the throttle policy (package gpu).
type GPU struct {
	Monitor             string   `toml:"monitor" reload:"restart"`
	Device              int      `toml:"device" reload:"restart"`
	Poll                Duration `toml:"poll" reload:"live"`
	TempPauseC          int      `toml:"temp_pause_c" reload:"live"`
	TempResumeC         int      `toml:"temp_resume_c" reload:"live"`
	SlowdownMarginC     int      `toml:"slowdown_margin_c" reload:"live"`
	MinFreeMiB          int      `toml:"min_free_mib" reload:"live"`
	FreeHysteresisMiB   int      `toml:"free_hysteresis_mib" reload:"live"`
	ShrinkFreeMiB       int      `toml:"shrink_free_mib" reload:"live"`
	MinTile             int      `toml:"min_tile" reload:"live"`
	MaxOtherUtilPercent int      `toml:"max_other_util_percent" reload:"live"`
	MaxOtherMemoryMiB   int      `toml:"max_other_memory_mib" reload:"live"`
	OnThermalEvent      string   `toml:"on_thermal_event" reload:"live"`
	OnPowerEvent        string   `toml:"on_power_event" reload:"live"`
	OnHWSlowdown        string   `toml:"on_hw_slowdown" reload:"live"`
	SlowPause           Duration `toml:"slow_pause" reload:"live"`
	ResumeHold          Duration `toml:"resume_hold" reload:"live"`
}

// Limits bound the resources the daemon plans for.
type Limits struct {
	// MemoryMiB is the memory budget: what the model and runtime hold at
	// start plus the estimated peak of every frame in flight (from its
	// header) stays below it. A frame that would not fit waits for the
	// frames ahead of it; one that cannot fit even alone goes to failed/.
	MemoryMiB int `toml:"memory_mib" reload:"live" note:"MiB"`
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
			Instance:      "%h",
			Lease:         D(30 * time.Second),
			LeaseMargin:   D(15 * time.Second),
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
// and what is wrong. Err, when set, is the cause the reason was made from
// (a decoder's error, a %w argument of Errorf): errors.Is and errors.As see
// it through Unwrap.
type Error struct {
	File   string
	Line   int // 0 when the key is not in the file (a default, or a whole-file error)
	Key    string
	Value  string
	Reason string
	Err    error
}

// Unwrap is the cause, or nil.
func (e *Error) Unwrap() error { return e.Err }

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

// Unwrap is every mistake, so that errors.As finds an *Error (and its
// cause) in Errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
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
		return nil, &Error{File: path, Reason: perr.Error(), Err: perr}
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
// (a model folder that is missing, a library that does not load). As with
// fmt.Errorf, a %w argument is kept as the cause (Unwrap).
func (c *Config) Errorf(key, format string, args ...any) *Error {
	reason := fmt.Errorf(format, args...)
	e := &Error{File: c.path, Key: key, Reason: reason.Error()}
	switch w := reason.(type) {
	case interface{ Unwrap() error }:
		e.Err = w.Unwrap()
	case interface{ Unwrap() []error }:
		e.Err = errors.Join(w.Unwrap()...)
	}
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
			e := &Error{File: c.path, Line: line, Key: key, Value: valueOnLine(doc, line), Reason: "unknown key" + suggest(key), Err: de}
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
		e := &Error{File: c.path, Line: line, Key: key, Reason: typeReason(de.Error(), key), Err: err}
		if key != "" {
			e.Value = valueOnLine(doc, line)
		}
		return e
	}
	return &Error{File: c.path, Reason: err.Error(), Err: err}
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
				e := c.Errorf(key, "not a duration: write a string such as \"500ms\", \"2s\" or \"1m30s\"")
				e.Err = err
				errs = append(errs, e)
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
	dur("spool.lease", &c.Spool.Lease, time.Second, time.Hour)
	dur("spool.lease_margin", &c.Spool.LeaseMargin, 100*time.Millisecond, time.Hour)
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
	// The id names the folders work/<id>/ and leases/<id>; "%h" is the
	// host's short name (which the daemon makes safe).
	if !validInstance(strings.ReplaceAll(c.Spool.Instance, "%h", "h")) {
		bad("spool.instance", "%q is not a safe folder name: use 1-64 letters, digits, '.', '_' or '-' "+
			"(not first: '.' or '-'), and %%h for the host name", c.Spool.Instance)
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
	case c.Backend.Kind == "onnxruntime" && (len(devices) > 0 || derr == nil && c.Backend.devicesAll()):
		bad("backend.devices", "lists GPUs, but backend.kind = \"onnxruntime\" runs on the CPU: "+
			"GPU workers need backend.kind = \"tensorrt\" or \"auto\" (for CPU workers set backend.workers)")
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
			bad("http.listen", "must be host:port (or \"\" for no HTTP server): %w", err)
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

// validInstance mirrors spool.ValidInstance (config imports no other
// hidiffd package): a safe folder name of at most 64 bytes.
func validInstance(id string) bool {
	if id == "" || len(id) > 64 || id[0] == '.' || id[0] == '-' {
		return false
	}
	for _, r := range id {
		if !(r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
