package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"hidiffd/config"
	"hidiffd/daemon"
)

// outputFlags are `deblur`'s counterparts of the [output] metadata keys, so
// one-shot outputs are the daemon's: the source's metadata kept, the
// provenance written, the original's file time, and NAME.json on request.
type outputFlags struct {
	keepMeta  *bool
	keepMtime *bool
	sidecar   *bool
}

func addOutputFlags(fs *flag.FlagSet) *outputFlags {
	def := config.Default().Output
	return &outputFlags{
		keepMeta:  fs.Bool("keep-metadata", def.KeepMetadata, "carry the input's EXIF/XMP/ICC/text metadata into the output (false: provenance only)"),
		keepMtime: fs.Bool("keep-mtime", def.KeepMtime, "give each output its input's modification time"),
		sidecar:   fs.Bool("sidecar", def.Sidecar, "also write NAME.json (provenance, timings, metadata report) beside each output"),
	}
}

// finish completes a written output: one warning line for malformed
// metadata, the input's file time, the sidecar.
func (o *outputFlags) finish(log zerolog.Logger, r oneResult) error {
	name := filepath.Base(r.out)
	if p := r.meta.Report.Problems; len(p) > 0 {
		log.Warn().Str("name", name).Strs("dropped", p).Msg("malformed metadata dropped; the image goes on")
	}
	mtime := r.img.Meta.ModTime
	if *o.sidecar {
		sc := daemon.NewSidecar(name, name, r.img, r.prov, r.st, r.meta, r.decode, r.encode, r.total)
		if err := writeAtomic(r.out+".json", func(w io.Writer) error { return sc.Write(w) }); err != nil {
			return err
		}
		if *o.keepMtime && !mtime.IsZero() {
			if err := os.Chtimes(r.out+".json", time.Time{}, mtime); err != nil {
				return err
			}
		}
	}
	if *o.keepMtime && !mtime.IsZero() {
		return os.Chtimes(r.out, time.Time{}, mtime)
	}
	return nil
}
