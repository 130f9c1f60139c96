package imageio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// OutputMetadata is what Encode writes besides the pixels: complete JPEG
// marker segments or PNG chunks, ready to be placed after SOI or IHDR, and
// the report of what was kept, changed, added and dropped.
type OutputMetadata struct {
	format string
	blocks [][]byte
	Report MetadataReport
}

// MetadataReport lists, one sentence each, what happened to the source's
// metadata. Problems are the malformed parts that were dropped (the daemon
// logs them in one line); Omitted are well-formed parts not carried by
// design (preview images, codec settings).
type MetadataReport struct {
	Kept     []string `json:"kept,omitempty"`
	Changed  []string `json:"changed,omitempty"`
	Added    []string `json:"added,omitempty"`
	Problems []string `json:"dropped_malformed,omitempty"`
	Omitted  []string `json:"omitted,omitempty"`
}

// Limits of one JPEG segment body (65535 minus the length field) once the
// identifier is in.
const (
	maxJPEGSegment = 0xFFFF - 2
	maxJPEGEXIF    = maxJPEGSegment - len(jpegExifID)
	maxJPEGXMP     = maxJPEGSegment - len(jpegXMPID)
)

// PrepareMetadata decides what an output in format carries: with keep, the
// source's EXIF (Orientation 1 when the pixels were rotated, thumbnail
// dropped, Software set), XMP, ICC profile, JPEG comments, IPTC and JFIF
// density, or PNG colour and text chunks; and with prov, the provenance
// (EXIF Software, the hidiffd XMP properties, PNG Software text), also when
// the source had no metadata at all. src may be nil (no source metadata).
// It never fails: what cannot be carried is in the report.
func PrepareMetadata(src *Metadata, format string, prov *Provenance, keep bool) (om *OutputMetadata) {
	if keep {
		// A bug in the editors must cost the source's metadata, never the
		// frame: fall back to the provenance alone.
		defer func() {
			if r := recover(); r != nil {
				om = PrepareMetadata(src, format, prov, false)
				om.Report.Omitted = nil
				om.Report.Problems = []string{fmt.Sprintf("source metadata dropped: the editor failed (%v)", r)}
			}
		}()
	}
	om = &OutputMetadata{format: format}
	r := &om.Report
	if src == nil || !keep {
		src = &Metadata{Applied: 1, SourceSHA256: srcSHA(src)}
		if !keep {
			r.Omitted = append(r.Omitted, "source metadata (output.keep_metadata = false)")
		}
	} else {
		r.Problems = append(r.Problems, src.Problems...)
		r.Omitted = append(r.Omitted, src.Omitted...)
	}
	software := ""
	if prov != nil {
		software = prov.Text()
	}

	// EXIF.
	var exif []byte
	oldSoftware := ""
	if src.EXIF != nil {
		res, err := editEXIF(src.EXIF, src.Applied, software)
		if err == nil && format == FormatJPEG && len(res.tiff) > maxJPEGEXIF && software != "" {
			// Appending IFD0 made it too long for one segment: edit in
			// place only; the provenance is still in the XMP.
			res, err = editEXIF(src.EXIF, src.Applied, "")
			if err == nil {
				r.Omitted = append(r.Omitted, "EXIF Software (the EXIF block is at the JPEG segment limit; provenance is in the XMP)")
			}
		}
		switch {
		case err != nil:
			r.Problems = append(r.Problems, fmt.Sprintf("EXIF dropped: %v", err))
		case format == FormatJPEG && len(res.tiff) > maxJPEGEXIF:
			r.Problems = append(r.Problems, fmt.Sprintf("EXIF dropped: %d bytes do not fit one JPEG segment", len(res.tiff)))
		default:
			exif, oldSoftware = res.tiff, res.oldSoftware
			r.Problems = append(r.Problems, res.problems...)
			k := fmt.Sprintf("EXIF (%d entries", res.entries)
			if res.gps {
				k += ", GPS"
			}
			if res.makerNote > 0 {
				k += fmt.Sprintf(", maker note %d bytes unmoved", res.makerNote)
			}
			r.Kept = append(r.Kept, k+")")
			r.Changed = append(r.Changed, res.changes...)
		}
	}
	if exif == nil && software != "" {
		exif = newEXIF(software)
		r.Added = append(r.Added, "EXIF with Software: "+software)
	}

	// XMP.
	var xmp []byte
	var props [][2]string
	if prov != nil {
		props = prov.xmpProperties(src, oldSoftware)
	}
	if src.XMP != nil {
		if prov == nil && src.Applied <= 1 {
			xmp = src.XMP
			r.Kept = append(r.Kept, "XMP")
		} else if out, ch, err := editXMP(src.XMP, props, src.Applied); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("XMP dropped: %v", err))
		} else {
			xmp = out
			r.Kept = append(r.Kept, "XMP")
			r.Changed = append(r.Changed, ch...)
			if prov != nil {
				r.Added = append(r.Added, "XMP hidiffd provenance properties")
			}
		}
		if format == FormatJPEG && len(xmp) > maxJPEGXMP {
			xmp = trimXMPPadding(xmp)
			if len(xmp) > maxJPEGXMP {
				if len(src.XMP) <= maxJPEGXMP {
					xmp = src.XMP
					r.Omitted = append(r.Omitted, "XMP provenance (the packet is at the JPEG segment limit; kept unchanged)")
				} else {
					xmp = nil
					r.Problems = append(r.Problems, fmt.Sprintf("XMP dropped: %d bytes do not fit one JPEG segment", len(src.XMP)))
				}
			}
		}
	}
	if xmp == nil && prov != nil {
		xmp = newXMP(props)
		r.Added = append(r.Added, "XMP with the hidiffd provenance properties")
	}

	// ICC.
	icc := src.ICC
	if icc != nil {
		d := iccDescription(icc)
		if d == "" {
			d = "no description"
		}
		r.Kept = append(r.Kept, fmt.Sprintf("ICC profile (%s, %d bytes)", d, len(icc)))
	}

	if format == FormatJPEG {
		om.jpegBlocks(src, exif, xmp, icc)
	} else {
		om.pngBlocks(src, exif, xmp, icc, software)
	}
	return om
}

func srcSHA(m *Metadata) string {
	if m == nil {
		return ""
	}
	return m.SourceSHA256
}

func (om *OutputMetadata) jpegBlocks(src *Metadata, exif, xmp, icc []byte) {
	r := &om.Report
	add := func(marker byte, id string, body []byte) {
		om.blocks = append(om.blocks, jpegSegment(marker, append([]byte(id), body...)))
	}
	same := src.Format == FormatJPEG
	if same && src.JFIF != nil {
		j := clone(src.JFIF)
		if j[12] != 0 || j[13] != 0 {
			r.Changed = append(r.Changed, fmt.Sprintf("JFIF thumbnail dropped (%dx%d)", j[12], j[13]))
		}
		j = j[:14]
		j[12], j[13] = 0, 0
		add(0xE0, "", j)
		r.Kept = append(r.Kept, "JFIF density")
	}
	if exif != nil {
		add(0xE1, jpegExifID, exif)
	}
	if xmp != nil {
		add(0xE1, jpegXMPID, xmp)
	}
	if same {
		for _, x := range src.ExtendedXMP {
			add(0xE1, jpegExtXMPID, x)
		}
		if len(src.ExtendedXMP) > 0 {
			r.Kept = append(r.Kept, fmt.Sprintf("extended XMP (%d segments)", len(src.ExtendedXMP)))
		}
	}
	if icc != nil {
		segs, err := iccSegments(icc)
		if err != nil {
			r.Problems = append(r.Problems, "ICC profile dropped: "+err.Error())
		}
		om.blocks = append(om.blocks, segs...)
	}
	if !same {
		if len(src.Chunks) > 0 {
			r.Omitted = append(r.Omitted, "PNG colour and text chunks (no JPEG equivalent)")
		}
		return
	}
	for _, ps := range src.Photoshop {
		out, dropped, err := stripPhotoshopThumbnails(ps)
		switch {
		case err != nil:
			r.Problems = append(r.Problems, "Photoshop/IPTC segment dropped: "+err.Error())
		default:
			add(0xED, jpegPSID, out)
			r.Kept = append(r.Kept, "Photoshop/IPTC segment")
			if dropped > 0 {
				r.Changed = append(r.Changed, fmt.Sprintf("Photoshop thumbnail dropped (%d bytes)", dropped))
			}
		}
	}
	for _, c := range src.Comments {
		add(0xFE, "", c)
	}
	if len(src.Comments) > 0 {
		r.Kept = append(r.Kept, fmt.Sprintf("JPEG comments (%d)", len(src.Comments)))
	}
}

func (om *OutputMetadata) pngBlocks(src *Metadata, exif, xmp, icc []byte, software string) {
	r := &om.Report
	add := func(typ string, body []byte) { om.blocks = append(om.blocks, pngChunk(typ, body)) }
	same := src.Format == FormatPNG
	if same {
		for _, c := range src.Chunks {
			if c.Type == "cICP" || c.Type == "cHRM" || c.Type == "gAMA" {
				add(c.Type, c.Data)
			}
		}
	}
	if icc != nil {
		name := src.ICCName
		if name == "" {
			name = "ICC profile"
		}
		add("iCCP", append(append([]byte(name), 0, 0), deflate(icc)...))
	}
	if exif != nil {
		add("eXIf", exif)
	}
	if xmp != nil {
		// iTXt: keyword, NUL, uncompressed, method 0, empty language and
		// translated keyword (the form XMP's specification gives for PNG).
		add("iTXt", append([]byte(pngXMPKey+"\x00\x00\x00\x00\x00"), xmp...))
	}
	var kinds []string
	for _, c := range src.Chunks {
		switch {
		case !same:
		case c.Type == "cICP" || c.Type == "cHRM" || c.Type == "gAMA":
			kinds = append(kinds, c.Type)
		case software != "" && (c.Type == "tEXt" || c.Type == "zTXt" || c.Type == "iTXt") && textKeyword(c.Data) == "Software":
			r.Changed = append(r.Changed, "PNG Software text replaced")
		default:
			add(c.Type, c.Data)
			kinds = append(kinds, c.Type)
		}
	}
	if !same && len(src.Comments)+len(src.Photoshop) > 0 {
		r.Omitted = append(r.Omitted, "JPEG comments and IPTC (no PNG equivalent hidiffd writes)")
	}
	if len(kinds) > 0 {
		r.Kept = append(r.Kept, "PNG chunks "+joinCounts(kinds))
	}
	if software != "" {
		add("tEXt", append([]byte("Software\x00"), software...))
		r.Added = append(r.Added, "PNG Software text")
	}
}

// joinCounts writes ["tEXt","tEXt","pHYs"] as "tEXt x2, pHYs".
func joinCounts(kinds []string) string {
	var order []string
	n := map[string]int{}
	for _, k := range kinds {
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	var b bytes.Buffer
	for i, k := range order {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
		if n[k] > 1 {
			fmt.Fprintf(&b, " x%d", n[k])
		}
	}
	return b.String()
}

// jpegSegment is a complete marker segment: FF, marker, length, body.
func jpegSegment(marker byte, body []byte) []byte {
	s := make([]byte, 4, 4+len(body))
	s[0], s[1] = 0xFF, marker
	binary.BigEndian.PutUint16(s[2:], uint16(len(body)+2))
	return append(s, body...)
}

// pngChunk is a complete chunk: length, type, data, CRC.
func pngChunk(typ string, data []byte) []byte {
	c := make([]byte, 8, 12+len(data))
	binary.BigEndian.PutUint32(c, uint32(len(data)))
	copy(c[4:], typ)
	c = append(c, data...)
	return binary.BigEndian.AppendUint32(c, crcOf(typ, data))
}

func crcOf(typ string, data []byte) uint32 {
	h := crc32.NewIEEE()
	io.WriteString(h, typ)
	h.Write(data)
	return h.Sum32()
}

// stripPhotoshopThumbnails removes the thumbnail image resources (IDs 0x0409
// and 0x040C) from a Photoshop image-resource block (the APP13 body after
// "Photoshop 3.0\0"): 8BIM, ID, even-padded Pascal name, size, even-padded
// data, repeated.
func stripPhotoshopThumbnails(b []byte) ([]byte, int, error) {
	out := make([]byte, 0, len(b))
	dropped := 0
	for i := 0; i < len(b); {
		if len(b)-i < 7 || string(b[i:i+4]) != "8BIM" {
			if bytes.Count(b[i:], []byte{0}) == len(b)-i { // trailing padding
				break
			}
			return nil, 0, fmt.Errorf("image resource at byte %d has no 8BIM signature", i)
		}
		id := binary.BigEndian.Uint16(b[i+4:])
		nameLen := int(b[i+6]) + 1
		nameLen += nameLen & 1
		j := i + 6 + nameLen
		if j+4 > len(b) {
			return nil, 0, fmt.Errorf("image resource 0x%04X at byte %d is truncated", id, i)
		}
		size := int(binary.BigEndian.Uint32(b[j:]))
		end := j + 4 + size + size&1
		if size < 0 || end > len(b) || end < j {
			if j+4+size == len(b) { // last resource without its pad byte
				end = len(b)
			} else {
				return nil, 0, fmt.Errorf("image resource 0x%04X at byte %d runs past the end", id, i)
			}
		}
		if id == 0x0409 || id == 0x040C {
			dropped += size
		} else {
			out = append(out, b[i:end]...)
		}
		i = end
	}
	return out, dropped, nil
}

// injector passes the first `after` bytes written through, then writes
// payload, then everything else: it places metadata blocks after a JPEG's
// SOI or a PNG's IHDR while the encoder streams.
type injector struct {
	w       io.Writer
	after   int
	payload []byte
	n       int
	done    bool
}

func (j *injector) Write(p []byte) (int, error) {
	if j.done {
		return j.w.Write(p)
	}
	written := 0
	if rest := j.after - j.n; rest > 0 {
		k := min(rest, len(p))
		m, err := j.w.Write(p[:k])
		j.n += m
		written += m
		if err != nil {
			return written, err
		}
		p = p[k:]
		if j.n < j.after {
			return written, nil
		}
	}
	if _, err := j.w.Write(j.payload); err != nil {
		return written, err
	}
	j.done = true
	m, err := j.w.Write(p)
	return written + m, err
}

// writer wraps w so the blocks land at their place in format's stream.
func (om *OutputMetadata) writer(w io.Writer, format string) (io.Writer, error) {
	if om == nil || len(om.blocks) == 0 {
		return w, nil
	}
	if om.format != format {
		return nil, newErr(StageEncode, CodeInvalid, nil, "metadata prepared for %s, image encoded as %s", om.format, format)
	}
	after := 2 // SOI
	if format == FormatPNG {
		after = 8 + 12 + 13 // signature, IHDR
	}
	return &injector{w: w, after: after, payload: bytes.Join(om.blocks, nil)}, nil
}
