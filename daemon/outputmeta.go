package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"hidiffd/deblur"
	"hidiffd/imageio"
	"hidiffd/spool"
)

// What an output carries besides its pixels (the source's metadata and the
// provenance), its modification time and its NAME.json sidecar. The frame
// loop calls these at the output-encoding site; `hidiffd deblur` uses them
// too, so both write the same files.

// Provenance says how a frame was made: this hidiffd, the loaded model, the
// backend and its precision, and the seed and tiling the run used.
func Provenance(version string, b deblur.Backend, st deblur.Stats) *imageio.Provenance {
	info := b.Info()
	return &imageio.Provenance{
		Software: "hidiffd", Version: version,
		Model: info.Model, ModelVersion: info.Version, Preset: info.Preset, WeightsSHA256: info.WeightsSHA256,
		Backend: b.Name(), Precision: BackendPrecision(b),
		Seed: st.Seed, Tile: fmt.Sprintf("%dx%d", st.TileW, st.TileH), Overlap: st.Overlap,
	}
}

// BackendPrecision is the precision the backend computes in: a TensorRT
// engine's ("fp16" or "fp32", through the FP16 guard), else "fp32" (ONNX
// Runtime runs the float32 graphs as exported).
func BackendPrecision(b deblur.Backend) string {
	for b != nil {
		if p, ok := b.(interface{ Precision() string }); ok {
			return p.Precision()
		}
		u, ok := b.(interface{ Unwrap() deblur.Backend })
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	return "fp32"
}

// OutputMetadata prepares what the output of a decoded frame carries and
// logs, in one line, any malformed metadata that was dropped.
func OutputMetadata(log zerolog.Logger, name string, img *imageio.Image, prov *imageio.Provenance, keep bool) *imageio.OutputMetadata {
	om := imageio.PrepareMetadata(img.Meta, img.Format, prov, keep)
	if p := om.Report.Problems; len(p) > 0 {
		log.Warn().Str("name", name).Strs("dropped", p).Msg("malformed metadata dropped; the frame goes on")
	}
	if o := om.Report.Omitted; len(o) > 0 {
		log.Debug().Str("name", name).Strs("omitted", o).Msg("metadata not carried")
	}
	return om
}

// KeepModTime gives the written (not yet published) output file its
// original's modification time; a zero t leaves it alone.
func KeepModTime(f *os.File, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return os.Chtimes(f.Name(), time.Time{}, t)
}

// ProvenanceDict is the provenance as a nested object of a log line.
func ProvenanceDict(p *imageio.Provenance) *zerolog.Event {
	return zerolog.Dict().Str("software", p.Software).Str("version", p.Version).
		Str("model", p.Model).Str("model_version", p.ModelVersion).Str("preset", p.Preset).
		Str("weights_sha256", p.WeightsSHA256).Str("backend", p.Backend).Str("precision", p.Precision).
		Uint64("seed", p.Seed).Str("tile", p.Tile).Int("overlap", p.Overlap)
}

// Sidecar is the content of out/NAME.json (output.sidecar = true).
type Sidecar struct {
	Name       string                 `json:"name"`   // the frame's name as it arrived
	Output     string                 `json:"output"` // the output's name in out/
	Written    string                 `json:"written"`
	Format     string                 `json:"format"`
	Width      int                    `json:"width"`
	Height     int                    `json:"height"`
	Source     SidecarSource          `json:"source"`
	Provenance *imageio.Provenance    `json:"provenance"`
	Tiles      int                    `json:"tiles"`
	TimingsMS  SidecarTimings         `json:"timings_ms"`
	Metadata   imageio.MetadataReport `json:"metadata"`
}

// SidecarSource identifies the original.
type SidecarSource struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mtime  string `json:"mtime,omitempty"`
}

// SidecarTimings are the per-stage times in milliseconds.
type SidecarTimings struct {
	Decode      float64 `json:"decode"`
	Prior       float64 `json:"prior"`
	Transformer float64 `json:"transformer"`
	Encode      float64 `json:"encode"`
	Total       float64 `json:"total"`
}

// NewSidecar fills a Sidecar for a written output.
func NewSidecar(name, output string, img *imageio.Image, prov *imageio.Provenance, st deblur.Stats,
	om *imageio.OutputMetadata, decode, encode, total time.Duration) *Sidecar {
	sc := &Sidecar{
		Name: name, Output: output, Written: time.Now().UTC().Format(time.RFC3339Nano),
		Format: img.Format, Width: img.W, Height: img.H, Provenance: prov, Tiles: st.Tiles,
		TimingsMS: SidecarTimings{Decode: ms(decode), Prior: ms(st.Prior), Transformer: ms(st.Transform),
			Encode: ms(encode), Total: ms(total)},
	}
	if om != nil {
		sc.Metadata = om.Report
	}
	if m := img.Meta; m != nil {
		sc.Source = SidecarSource{Size: m.SourceSize, SHA256: m.SourceSHA256}
		if !m.ModTime.IsZero() {
			sc.Source.Mtime = m.ModTime.UTC().Format(time.RFC3339Nano)
		}
	}
	return sc
}

// Write writes the sidecar as indented JSON.
func (sc *Sidecar) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "6 -> 1", not "6 -\u003e 1"
	enc.SetIndent("", "  ")
	return enc.Encode(sc)
}

// encodeOptions is how the frame loop encodes f: the configured quality and
// the prepared metadata with the provenance of this run.
func (d *Daemon) encodeOptions(f *frame) (imageio.EncodeOptions, *imageio.Provenance) {
	cfg := d.cfg.Load()
	prov := Provenance(d.opts.Version, f.w.backend, f.stats)
	om := OutputMetadata(d.log, f.job.Name, f.img, prov, cfg.Output.KeepMetadata)
	return imageio.EncodeOptions{Quality: cfg.Output.JPEGQuality, Meta: om}, prov
}

// outputWritten runs on the written output file before it is published:
// it gets the original's modification time (output.keep_mtime).
func (d *Daemon) outputWritten(file *os.File, f *frame) error {
	if !d.cfg.Load().Output.KeepMtime || f.img.Meta == nil {
		return nil
	}
	return KeepModTime(file, f.img.Meta.ModTime)
}

// writeSidecar writes out/OUTPUT.json (output.sidecar) once the output is
// published. An error that may pass is returned (the frame is retried, its
// output rewritten); any other is logged: the output itself is good.
func (d *Daemon) writeSidecar(f *frame, eo imageio.EncodeOptions, prov *imageio.Provenance, encode time.Duration) error {
	if !d.cfg.Load().Output.Sidecar {
		return nil
	}
	sc := NewSidecar(f.job.Name, f.job.Output, f.img, prov, f.stats, eo.Meta, f.decode, encode, time.Since(f.start))
	err := d.spool.WriteBeside(f.job, ".json", func(file *os.File) error {
		if err := sc.Write(file); err != nil {
			return err
		}
		return d.outputWritten(file, f)
	})
	if err != nil && !spool.IsTransient(err) {
		d.log.Error().Str("name", f.job.Name).Err(err).Msg("sidecar not written; the output is")
		return nil
	}
	return err
}
