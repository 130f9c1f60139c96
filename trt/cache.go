package trt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"hidiffd/internal/durable"
)

// A TensorRT engine is only valid for the exact ONNX it was built from, the
// TensorRT version that built it, the GPU model (compute capability and,
// since tactics are timed on the device, the product), the precision, the
// typing mode and the graph's own precision (a strongly typed FP16 engine
// comes from the float16 export, a weakly typed one from the float32 graph
// with pins read from the float16 one), and the range of input shapes. The cache keeps one folder per distinct Key
// and never trusts a folder without a sidecar that repeats the whole key,
// so a mismatch of any part means "build another", never a crash.

// Recipe versions the way engines are built (FP32 pins, profiles, flags):
// bump it when Build changes what an engine computes, so old engines are
// rebuilt rather than reused. 2: strongly typed engines from the float16
// export; weakly typed pins read from its types.
const Recipe = 2

// File names inside one cache entry.
const (
	PriorEngine       = "prior.engine"
	TransformerEngine = "transformer.engine"
	SidecarFile       = "engine.json"
)

// Precisions.
const (
	FP16 = "fp16"
	FP32 = "fp32"
)

// Size is an H x W image size in pixels.
type Size struct{ H, W int }

func (s Size) String() string { return fmt.Sprintf("%dx%d", s.H, s.W) }

// ParseSize reads "HxW" (or "N" for NxN).
func ParseSize(s string) (Size, error) {
	hs, ws, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
	if !ok {
		ws = hs
	}
	h, err1 := strconv.Atoi(hs)
	w, err2 := strconv.Atoi(ws)
	if err1 != nil || err2 != nil || h <= 0 || w <= 0 {
		return Size{}, fmt.Errorf("size %q: want HxW with positive integers, e.g. 384x384", s)
	}
	return Size{H: h, W: w}, nil
}

// Profile is the optimisation profile of the image input: the engine
// accepts any H and W between Min and Max and is tuned for Opt.
type Profile struct {
	Min Size `json:"min"`
	Opt Size `json:"opt"`
	Max Size `json:"max"`
}

func (p Profile) String() string {
	return p.Min.String() + ".." + p.Opt.String() + ".." + p.Max.String()
}

// Validate checks Min <= Opt <= Max, all positive and multiples of pad.
func (p Profile) Validate(pad int) error {
	for _, s := range []Size{p.Min, p.Opt, p.Max} {
		if s.H <= 0 || s.W <= 0 {
			return fmt.Errorf("profile %s: sizes must be positive", p)
		}
		if pad > 1 && (s.H%pad != 0 || s.W%pad != 0) {
			return fmt.Errorf("profile %s: %s is not a multiple of the model's pad multiple %d", p, s, pad)
		}
	}
	if p.Min.H > p.Opt.H || p.Min.W > p.Opt.W || p.Opt.H > p.Max.H || p.Opt.W > p.Max.W {
		return fmt.Errorf("profile %s: want min <= opt <= max in both H and W", p)
	}
	return nil
}

// Contains reports whether an H x W input is inside the profile.
func (p Profile) Contains(s Size) bool {
	return s.H >= p.Min.H && s.W >= p.Min.W && s.H <= p.Max.H && s.W <= p.Max.W
}

// ProfileFor is the profile for a tile list: tuned for the first tile, up
// to the largest tile in each axis, down to least (the pad multiple in the
// daemon: frame axes shorter than the tile are not padded up to it, see
// deblur.Options.Tile, so any multiple of it can arrive).
func ProfileFor(tiles []Size, least Size) (Profile, error) {
	if len(tiles) == 0 {
		return Profile{}, errors.New("no tile sizes")
	}
	p := Profile{Min: least, Opt: tiles[0], Max: tiles[0]}
	for _, t := range tiles {
		if t.H < least.H || t.W < least.W {
			return Profile{}, fmt.Errorf("tile %s is smaller than the profile minimum %s", t, least)
		}
		p.Max.H, p.Max.W = max(p.Max.H, t.H), max(p.Max.W, t.W)
	}
	return p, nil
}

// Key is everything an engine pair depends on.
type Key struct {
	PriorONNX         string `json:"prior_onnx_sha256"`
	TransformerONNX   string `json:"transformer_onnx_sha256"`
	TensorRT          string `json:"tensorrt_version"`
	GPU               string `json:"gpu"`
	ComputeCapability string `json:"compute_capability"`
	Precision         string `json:"precision"` // of the transformer; the prior is always FP32
	Typing            string `json:"typing"`    // Weak or Strong, both engines
	// ONNXPrecision is the precision of the transformer graph the engine is
	// built from (TransformerONNX): FP16 for transformer.fp16.onnx, FP32 for
	// transformer.onnx.
	ONNXPrecision string `json:"onnx_precision"`
	// PinsONNX is, for a weakly typed FP16 engine, the sha256 of the float16
	// graph whose types gave the FP32 pins; empty otherwise.
	PinsONNX string  `json:"fp32_pins_onnx_sha256,omitempty"`
	Profile  Profile `json:"profile"`
	Recipe   int     `json:"recipe"`
}

// Validate reports an incomplete key: an entry must never be found under
// a key with a part missing.
func (k Key) Validate() error {
	var missing []string
	for name, v := range map[string]string{"prior ONNX sha256": k.PriorONNX, "transformer ONNX sha256": k.TransformerONNX,
		"TensorRT version": k.TensorRT, "GPU name": k.GPU, "compute capability": k.ComputeCapability} {
		if strings.TrimSpace(v) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("engine cache key lacks %s", strings.Join(missing, ", "))
	}
	if k.Precision != FP16 && k.Precision != FP32 {
		return fmt.Errorf("engine cache key: precision %q, want %q or %q", k.Precision, FP16, FP32)
	}
	if k.Typing != Weak && k.Typing != Strong {
		return fmt.Errorf("engine cache key: typing %q, want %q or %q", k.Typing, Weak, Strong)
	}
	// The combinations Build makes (PlanFor), and no other.
	want, pins := FP32, false
	switch {
	case k.Precision == FP16 && k.Typing == Strong:
		want = FP16
	case k.Precision == FP16:
		pins = true
	}
	if k.ONNXPrecision != want || (k.PinsONNX != "") != pins {
		return fmt.Errorf("engine cache key: a %s %s engine is built from a %s graph%s, not from a %q one%s",
			k.Typing, k.Precision, want, map[bool]string{true: " with pins from the float16 graph", false: ""}[pins],
			k.ONNXPrecision, map[bool]string{true: " with pins", false: ""}[k.PinsONNX != ""])
	}
	return k.Profile.Validate(1)
}

// ID is the key's folder name: a readable prefix and 16 hex digits of the
// SHA-256 of the key's JSON (field order is fixed by the struct, so the
// encoding is canonical).
func (k Key) ID() string {
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%s-%s-%s-%s", k.Precision, k.Typing, k.Profile.Opt, hex.EncodeToString(sum[:8]))
}

// FileSum describes one engine file, checked before it is deserialised.
type FileSum struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Sidecar is engine.json: the whole key again, and how the entry was made.
type Sidecar struct {
	Key            Key                    `json:"key"`
	ID             string                 `json:"id"`
	BuiltAt        time.Time              `json:"built_at"`
	BuildSeconds   float64                `json:"build_seconds"`
	HidiffdVersion string                 `json:"hidiffd_version"`
	Model          string                 `json:"model,omitempty"`  // ModelInfo.Model
	Preset         string                 `json:"preset,omitempty"` // ModelInfo.Preset
	Workspace      int64                  `json:"workspace_bytes,omitempty"`
	Engines        map[string]FileSum     `json:"engines"`
	Builds         map[string]BuildResult `json:"builds,omitempty"` // per engine file
}

// Cache is the engine folder (backend.engine_dir).
type Cache struct{ Dir string }

// ErrNotCached means no usable entry exists for a key.
var ErrNotCached = errors.New("no engine for this key in the cache")

// Entry is one usable cache folder.
type Entry struct {
	Dir     string
	Sidecar Sidecar
}

// Path is a file of the entry.
func (e *Entry) Path(name string) string { return filepath.Join(e.Dir, name) }

// EntryDir is where the entry for k lives (whether or not it exists).
func (c Cache) EntryDir(k Key) string { return filepath.Join(c.Dir, k.ID()) }

// Lookup returns the entry for k if its sidecar repeats k exactly and its
// engine files have the recorded sizes. Anything else is ErrNotCached
// (wrapped with the reason); the contents are checked when loaded.
func (c Cache) Lookup(k Key) (*Entry, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	dir := c.EntryDir(k)
	b, err := os.ReadFile(filepath.Join(dir, SidecarFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s)", ErrNotCached, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotCached, err)
	}
	var sc Sidecar
	if err := json.Unmarshal(b, &sc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotCached, filepath.Join(dir, SidecarFile), err)
	}
	if sc.Key != k {
		// A truncated hash collision, or a hand-edited folder: not ours.
		return nil, fmt.Errorf("%w: %s describes another key", ErrNotCached, filepath.Join(dir, SidecarFile))
	}
	for _, name := range []string{PriorEngine, TransformerEngine} {
		want, ok := sc.Engines[name]
		st, err := os.Stat(filepath.Join(dir, name))
		if !ok || err != nil || st.Size() != want.Bytes {
			return nil, fmt.Errorf("%w: %s missing or of the wrong size", ErrNotCached, filepath.Join(dir, name))
		}
	}
	return &Entry{Dir: dir, Sidecar: sc}, nil
}

// ReadEngine reads one engine file of the entry and checks its SHA-256
// against the sidecar, so a corrupt file is caught before TensorRT sees it.
func (e *Entry) ReadEngine(name string) ([]byte, error) {
	b, err := os.ReadFile(e.Path(name))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if want := e.Sidecar.Engines[name].SHA256; hex.EncodeToString(sum[:]) != want {
		return nil, fmt.Errorf("%s: sha256 %s, the sidecar says %s (corrupt)", e.Path(name), hex.EncodeToString(sum[:8]), want)
	}
	return b, nil
}

// Stage makes a fresh temporary folder inside the cache for a build; the
// same file system, so Commit can rename it into place.
func (c Cache) Stage() (string, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", fmt.Errorf("engine cache: %w", err)
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	dir := filepath.Join(c.Dir, ".build-"+hex.EncodeToString(r[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("engine cache: %w", err)
	}
	return dir, nil
}

// Commit completes a staged build: it sums the engine files into the
// sidecar, writes the sidecar (fsynced), and renames the folder to the
// key's, replacing an older entry of the same key (one that failed to
// load). A crash at any point leaves either the old entry, no entry, or
// the new one, plus at most a ".build-*" folder that Clean removes.
func (c Cache) Commit(staged string, sc Sidecar) (*Entry, error) {
	if err := sc.Key.Validate(); err != nil {
		return nil, err
	}
	sc.ID = sc.Key.ID()
	sc.Engines = map[string]FileSum{}
	for _, name := range []string{PriorEngine, TransformerEngine} {
		sum, err := sumFile(filepath.Join(staged, name))
		if err != nil {
			return nil, fmt.Errorf("engine cache: %w", err)
		}
		sc.Engines[name] = sum
	}
	b, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := durable.WriteFile(filepath.Join(staged, SidecarFile), append(b, '\n'), 0o666); err != nil {
		return nil, fmt.Errorf("engine cache: %w", err)
	}
	final := c.EntryDir(sc.Key)
	if _, err := os.Stat(final); err == nil {
		if err := c.discard(final); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(staged, final); err != nil {
		return nil, fmt.Errorf("engine cache: %w", err)
	}
	// The entry is in place; an fsync that fails means it may not survive
	// a power loss, so the build does not count as done (the next start
	// checks the entry again and rebuilds it if it is not whole).
	if err := durable.SyncDir(c.Dir); err != nil {
		return nil, fmt.Errorf("engine cache: fsync %s: %w", c.Dir, err)
	}
	return &Entry{Dir: final, Sidecar: sc}, nil
}

// Invalidate removes the entry for k (an engine that did not load), so the
// next start builds a new one.
func (c Cache) Invalidate(k Key) error {
	dir := c.EntryDir(k)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return c.discard(dir)
}

// discard moves a folder aside (atomic) and then deletes it.
func (c Cache) discard(dir string) error {
	aside := filepath.Join(c.Dir, ".old-"+filepath.Base(dir)+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("engine cache: %w", err)
	}
	return os.RemoveAll(aside)
}

// Clean removes folders left by interrupted builds and discards.
func (c Cache) Clean() error {
	ents, err := os.ReadDir(c.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, ".build-") || strings.HasPrefix(n, ".old-") {
			if err := os.RemoveAll(filepath.Join(c.Dir, n)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// TimingCachePath is the builder's timing cache for one TensorRT version
// and GPU: timings are only valid there, and a shared file would be
// rejected (and replaced) by every other combination.
func (c Cache) TimingCachePath(d DeviceInfo) string {
	slug := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, d.GPU)
	return filepath.Join(c.Dir, "timing", fmt.Sprintf("trt%s-%s-sm%s.cache", d.TensorRT, slug, strings.ReplaceAll(d.ComputeCapability, ".", "")))
}

// SHA256File is the hex SHA-256 of a file's contents.
func SHA256File(path string) (string, error) {
	s, err := sumFile(path)
	return s.SHA256, err
}

func sumFile(path string) (FileSum, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileSum{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return FileSum{}, fmt.Errorf("%s: %w", path, err)
	}
	return FileSum{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
