package imageio

import (
	"bytes"
	"compress/zlib"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// Metadata is what a source file says besides its pixels, taken from the
// bytes at decode so that Encode can carry it into the output (see
// PrepareMetadata). Only the container is parsed here (JPEG marker
// segments, PNG chunks); EXIF and XMP are edited when the output is
// prepared. Problems never fail a frame: they are listed in Problems and
// the part concerned is left out.
type Metadata struct {
	Format string // FormatJPEG or FormatPNG: the container it came from

	EXIF []byte // TIFF structure ("II*\x00..." or "MM\x00*..."), as found
	XMP  []byte // the XMP packet, as found
	ICC  []byte // the ICC profile, reassembled (JPEG) or inflated (PNG)
	// ICCName is the profile name of a PNG iCCP chunk.
	ICCName string

	// Applied is the EXIF orientation already applied to the decoded
	// pixels (1 for PNG: its eXIf orientation is not applied), so the
	// output's Orientation becomes 1 exactly when the rotation was done.
	Applied int

	// JPEG only, carried into JPEG outputs.
	JFIF        []byte   // APP0 "JFIF\x00" body (its thumbnail is dropped on output)
	ExtendedXMP [][]byte // APP1 "http://ns.adobe.com/xmp/extension/\x00" bodies, verbatim
	Photoshop   [][]byte // APP13 "Photoshop 3.0\x00" bodies (IPTC; thumbnails dropped on output)
	Comments    [][]byte // COM bodies

	// PNG only, carried into PNG outputs: colour and text chunks kept
	// verbatim (sRGB, gAMA, cHRM, cICP, pHYs, tEXt, zTXt, iTXt).
	Chunks []Chunk

	// ModTime is the source file's modification time (zero when decoded
	// from memory); SourceSize and SourceSHA256 identify the source bytes.
	ModTime      time.Time
	SourceSize   int64
	SourceSHA256 string

	// Problems are malformed parts that were left out, one sentence each;
	// Omitted are well-formed parts that are not carried (preview images,
	// codec settings), one sentence each.
	Problems []string
	Omitted  []string
}

// Chunk is one PNG chunk: its four-letter type and its data.
type Chunk struct {
	Type string
	Data []byte
}

// Sizes that bound what one file's metadata can make us allocate.
const (
	maxICC        = 16 << 20 // ICC profiles are kilobytes; 255 JPEG chunks are 16 MiB
	maxInflatedMD = 16 << 20 // a zTXt/iTXt/iCCP that inflates beyond this is refused
)

const (
	jpegExifID   = "Exif\x00\x00"
	jpegXMPID    = "http://ns.adobe.com/xap/1.0/\x00"
	jpegExtXMPID = "http://ns.adobe.com/xmp/extension/\x00"
	jpegICCID    = "ICC_PROFILE\x00"
	jpegPSID     = "Photoshop 3.0\x00"
	pngXMPKey    = "XML:com.adobe.xmp"
)

// ExtractMetadata reads the metadata of a whole JPEG or PNG file held in
// memory. It never fails on malformed metadata (see Metadata.Problems); it
// returns an error only when data is neither JPEG nor PNG.
func ExtractMetadata(data []byte) (*Metadata, error) {
	format, err := sniff(data[:min(len(data), 16)])
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	m := &Metadata{Format: format, Applied: 1, SourceSize: int64(len(data)), SourceSHA256: hex.EncodeToString(sum[:])}
	defer func() {
		// A bug here must cost the metadata, never the frame.
		if r := recover(); r != nil {
			*m = Metadata{Format: format, Applied: 1, SourceSize: m.SourceSize, SourceSHA256: m.SourceSHA256,
				Problems: []string{fmt.Sprintf("all metadata dropped: the reader failed (%v)", r)}}
		}
	}()
	if format == FormatJPEG {
		m.readJPEG(data)
	} else {
		m.readPNG(data)
	}
	return m, nil
}

func (m *Metadata) problem(format string, args ...any) {
	m.Problems = append(m.Problems, fmt.Sprintf(format, args...))
}

func (m *Metadata) omit(format string, args ...any) {
	m.Omitted = append(m.Omitted, fmt.Sprintf(format, args...))
}

// readJPEG walks the marker segments from SOI to the first SOS (the same
// walk as jpegOrientation) and keeps the metadata segments.
func (m *Metadata) readJPEG(data []byte) {
	var icc []iccChunk
	i := 2
walk:
	for i < len(data) {
		if data[i] != 0xFF {
			m.problem("JPEG segment chain broken at byte %d; metadata after it not read", i)
			break
		}
		for i < len(data) && data[i] == 0xFF {
			i++
		}
		if i >= len(data) {
			break
		}
		marker := data[i]
		i++
		switch {
		case marker == 0xD8, marker == 0x01, marker >= 0xD0 && marker <= 0xD7:
			continue
		case marker == 0xDA, marker == 0xD9:
			break walk
		}
		if i+2 > len(data) {
			break
		}
		n := int(binary.BigEndian.Uint16(data[i:]))
		if n < 2 || i+n > len(data) {
			m.problem("JPEG segment 0x%02X at byte %d claims %d bytes past the end; metadata after it not read", marker, i-2, n)
			break
		}
		seg := data[i+2 : i+n]
		at := i - 2
		i += n
		has := func(id string) bool { return len(seg) >= len(id) && string(seg[:len(id)]) == id }
		switch {
		case marker == 0xE0 && has("JFIF\x00"):
			if len(seg) < 14 {
				m.problem("JFIF segment at byte %d is %d bytes, shorter than its 14-byte header; dropped", at, len(seg))
			} else if m.JFIF == nil {
				m.JFIF = clone(seg)
			}
		case marker == 0xE0:
			m.omit("APP0 %s segment (JFIF extension/thumbnail)", segName(seg))
		case marker == 0xE1 && has(jpegExifID):
			if m.EXIF == nil {
				m.EXIF = clone(seg[len(jpegExifID):])
			} else {
				m.omit("second EXIF segment at byte %d (only the first is read, as for orientation)", at)
			}
		case marker == 0xE1 && has(jpegXMPID):
			if m.XMP == nil {
				m.XMP = clone(seg[len(jpegXMPID):])
			} else {
				m.omit("second XMP segment at byte %d", at)
			}
		case marker == 0xE1 && has(jpegExtXMPID):
			m.ExtendedXMP = append(m.ExtendedXMP, clone(seg[len(jpegExtXMPID):]))
		case marker == 0xE2 && has(jpegICCID):
			b := seg[len(jpegICCID):]
			if len(b) < 2 {
				m.problem("ICC profile chunk at byte %d has no sequence header; profile dropped", at)
				icc = append(icc, iccChunk{seq: -1})
				continue
			}
			icc = append(icc, iccChunk{seq: int(b[0]), total: int(b[1]), body: b[2:]})
		case marker == 0xED && has(jpegPSID):
			m.Photoshop = append(m.Photoshop, clone(seg[len(jpegPSID):]))
		case marker == 0xFE:
			m.Comments = append(m.Comments, clone(seg))
		case marker == 0xE2 && has("MPF\x00"):
			m.omit("APP2 MPF segment (multi-picture index: its preview images are of the blurry frame)")
		case marker == 0xEE:
			m.omit("APP14 %s segment (encoder colour-transform setting; the output has its own)", segName(seg))
		case marker >= 0xE0 && marker <= 0xEF:
			m.omit("APP%d %s segment (not a metadata kind hidiffd carries)", marker-0xE0, segName(seg))
		}
	}
	if len(icc) > 0 {
		m.ICC = m.assembleICC(icc)
	}
}

// iccChunk is one APP2 ICC_PROFILE segment: its number, the count, its part.
type iccChunk struct {
	seq, total int
	body       []byte
}

// assembleICC joins ICC_PROFILE chunks in sequence order (ICC.1 Annex B.4)
// and checks the result.
func (m *Metadata) assembleICC(chunks []iccChunk) []byte {
	total := chunks[0].total
	seen := make([][]byte, total+1)
	size := 0
	for _, c := range chunks {
		switch {
		case c.seq < 0:
			return nil
		case c.total != total || total == 0:
			m.problem("ICC profile chunks disagree on their count (%d and %d); profile dropped", total, c.total)
			return nil
		case c.seq < 1 || c.seq > total:
			m.problem("ICC profile chunk number %d of %d is out of range; profile dropped", c.seq, total)
			return nil
		case seen[c.seq] != nil:
			m.problem("ICC profile chunk %d of %d appears twice; profile dropped", c.seq, total)
			return nil
		}
		seen[c.seq] = c.body
		size += len(c.body)
	}
	for s := 1; s <= total; s++ {
		if seen[s] == nil {
			m.problem("ICC profile chunk %d of %d is missing; profile dropped", s, total)
			return nil
		}
	}
	if size > maxICC {
		m.problem("ICC profile of %d bytes is over the %d-byte limit; dropped", size, maxICC)
		return nil
	}
	p := make([]byte, 0, size)
	for s := 1; s <= total; s++ {
		p = append(p, seen[s]...)
	}
	if err := checkICC(p); err != nil {
		m.problem("ICC profile dropped: %v", err)
		return nil
	}
	return p
}

// readPNG walks the chunks after the signature and keeps the metadata ones.
// CRCs were already checked by the decoder for every chunk it reached; this
// walk checks them again so that chunks after IDAT are covered too.
func (m *Metadata) readPNG(data []byte) {
	i := 8
	for i+12 <= len(data) {
		n := binary.BigEndian.Uint32(data[i:])
		typ := string(data[i+4 : i+8])
		if uint64(n) > uint64(len(data)-i-12) {
			m.problem("PNG chunk %q at byte %d claims %d bytes past the end; metadata after it not read", typ, i, n)
			return
		}
		body := data[i+8 : i+8+int(n)]
		crc := binary.BigEndian.Uint32(data[i+8+int(n):])
		at := i
		i += 12 + int(n)
		if typ == "IEND" {
			return
		}
		if typ == "IDAT" || typ == "IHDR" || typ == "PLTE" {
			continue
		}
		if crcOf(typ, body) != crc {
			m.problem("PNG %s chunk at byte %d has a bad CRC; dropped", typ, at)
			continue
		}
		switch typ {
		case "eXIf":
			b := body
			if bytes.HasPrefix(b, []byte(jpegExifID)) { // a common writer mistake
				b = b[len(jpegExifID):]
			}
			if m.EXIF == nil {
				m.EXIF = clone(b)
			} else {
				m.omit("second eXIf chunk at byte %d", at)
			}
		case "iCCP":
			name, prof, err := readICCP(body)
			if err != nil {
				m.problem("PNG iCCP chunk dropped: %v", err)
			} else if m.ICC == nil {
				m.ICC, m.ICCName = prof, name
			}
		case "iTXt":
			key, text, err := readITXt(body)
			switch {
			case err != nil:
				m.problem("PNG iTXt chunk at byte %d dropped: %v", at, err)
			case key == pngXMPKey:
				if m.XMP == nil {
					m.XMP = text
				} else {
					m.omit("second XMP iTXt chunk at byte %d", at)
				}
			default:
				m.Chunks = append(m.Chunks, Chunk{typ, clone(body)})
			}
		case "tEXt", "zTXt":
			if err := checkText(typ, body); err != nil {
				m.problem("PNG %s chunk at byte %d dropped: %v", typ, at, err)
				continue
			}
			if key := textKeyword(body); len(key) > 17 && key[:17] == "Raw profile type " {
				m.omit("PNG %s %q (an old copy of EXIF/XMP/ICC that hidiffd cannot keep in step with the pixels)", typ, key)
				continue
			}
			m.Chunks = append(m.Chunks, Chunk{typ, clone(body)})
		case "sRGB", "gAMA", "cHRM", "cICP", "pHYs":
			m.Chunks = append(m.Chunks, Chunk{typ, clone(body)})
		case "tIME":
			m.omit("PNG tIME chunk (the output is a new image; its file time is kept instead)")
		case "acTL", "fcTL", "fdAT":
			// APNG frames: not metadata, and not decoded (the first frame is).
		default:
			if typ[0]&0x20 != 0 { // ancillary
				m.omit("PNG %s chunk (not a metadata kind hidiffd carries)", typ)
			}
		}
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// segName is the identifier at the start of an APPn body, for messages.
func segName(seg []byte) string {
	end := bytes.IndexByte(seg[:min(len(seg), 40)], 0)
	if end < 0 {
		end = min(len(seg), 12)
	}
	s := seg[:end]
	for _, c := range s {
		if c < 0x20 || c > 0x7E {
			return "(binary)"
		}
	}
	return fmt.Sprintf("%q", s)
}

// inflate decompresses a zlib stream, refusing more than limit bytes.
func inflate(b []byte, limit int64) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("inflates to more than %d bytes", limit)
	}
	return out, nil
}

func deflate(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&buf, zlib.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// readICCP parses an iCCP body: name, NUL, method 0, zlib stream.
func readICCP(b []byte) (string, []byte, error) {
	nul := bytes.IndexByte(b[:min(len(b), 81)], 0)
	if nul < 1 || nul > 79 {
		return "", nil, fmt.Errorf("profile name is not 1 to 79 bytes")
	}
	if nul+1 >= len(b) || b[nul+1] != 0 {
		return "", nil, fmt.Errorf("unknown compression method")
	}
	p, err := inflate(b[nul+2:], maxICC)
	if err != nil {
		return "", nil, fmt.Errorf("profile does not inflate: %v", err)
	}
	if err := checkICC(p); err != nil {
		return "", nil, err
	}
	return string(b[:nul]), p, nil
}

// textKeyword is the keyword of a tEXt/zTXt/iTXt body (before the NUL).
func textKeyword(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func checkKeyword(b []byte) (int, error) {
	nul := bytes.IndexByte(b[:min(len(b), 81)], 0)
	if nul < 1 || nul > 79 {
		return 0, fmt.Errorf("keyword is not 1 to 79 bytes")
	}
	return nul, nil
}

// checkText checks a tEXt or zTXt body (keyword, and for zTXt a stream
// that inflates within bounds).
func checkText(typ string, b []byte) error {
	nul, err := checkKeyword(b)
	if err != nil {
		return err
	}
	if typ == "zTXt" {
		if nul+1 >= len(b) || b[nul+1] != 0 {
			return fmt.Errorf("unknown compression method")
		}
		if _, err := inflate(b[nul+2:], maxInflatedMD); err != nil {
			return fmt.Errorf("text does not inflate: %v", err)
		}
	}
	return nil
}

// readITXt parses an iTXt body and returns its keyword and (inflated) text.
func readITXt(b []byte) (string, []byte, error) {
	nul, err := checkKeyword(b)
	if err != nil {
		return "", nil, err
	}
	key := string(b[:nul])
	r := b[nul+1:]
	if len(r) < 2 {
		return "", nil, fmt.Errorf("truncated header")
	}
	compressed, method := r[0], r[1]
	r = r[2:]
	for k := 0; k < 2; k++ { // language tag, translated keyword
		j := bytes.IndexByte(r, 0)
		if j < 0 {
			return "", nil, fmt.Errorf("truncated header")
		}
		r = r[j+1:]
	}
	switch {
	case compressed == 0:
		return key, clone(r), nil
	case compressed == 1 && method == 0:
		t, err := inflate(r, maxInflatedMD)
		if err != nil {
			return "", nil, fmt.Errorf("text does not inflate: %v", err)
		}
		return key, t, nil
	default:
		return "", nil, fmt.Errorf("unknown compression flag %d / method %d", compressed, method)
	}
}
