package imageio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
)

// EXIF is edited in place and append-only: nothing that stays is moved.
// Libraries that parse EXIF into tags and write it out again relay every
// value, which breaks maker notes (Canon, Nikon, Olympus, Panasonic, Sony
// keep offsets into the EXIF block inside their opaque maker-note blob) and
// anything else they do not understand. Here the structure is walked and
// checked, values are patched where they stand (Orientation, pixel
// dimensions), the thumbnail is unlinked and zeroed, and a new IFD0 with the
// Software tag is appended at the end, the header pointing at it; every
// other offset stays valid.

// TIFF tags hidiffd reads or changes.
const (
	tagImageWidth  = 0x0100
	tagImageLength = 0x0101
	tagStripOffs   = 0x0111
	tagOrientation = 0x0112
	tagStripCounts = 0x0117
	tagSoftware    = 0x0131
	tagThumbOffset = 0x0201
	tagThumbLength = 0x0202
	tagExifIFD     = 0x8769
	tagGPSIFD      = 0x8825
	tagInteropIFD  = 0xA005
	tagPixelX      = 0xA002
	tagPixelY      = 0xA003
	tagMakerNote   = 0x927C
)

// tiffTypeSize is the byte size of one value of each TIFF field type (1..13).
var tiffTypeSize = [14]uint64{0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4}

// subIFDs names the pointer tags followed from each IFD.
var subIFDs = map[string]map[uint16]string{
	"IFD0":     {tagExifIFD: "Exif IFD", tagGPSIFD: "GPS IFD"},
	"Exif IFD": {tagInteropIFD: "Interop IFD"},
}

type span struct{ a, b uint64 }

// exifEdit is one EXIF block being checked and edited.
type exifEdit struct {
	t       []byte
	bo      binary.ByteOrder
	ifds    map[string]uint64 // offset of each IFD walked
	visited map[uint64]string
	tables  []span // IFD tables walked (they must not overlap)
	kept    []span // bytes still referenced: IFD tables and their values
	entries int    // entries kept in all IFDs walked
	mnote   int    // maker note bytes (0: none)

	problems []string // malformed parts dropped
	changes  []string // what was changed
}

// exifResult is an edited EXIF block and what was done to it.
type exifResult struct {
	tiff         []byte
	entries      int
	gps          bool
	makerNote    int
	oldSoftware  string
	orientation  int // the source's Orientation (0: none)
	thumbDropped int // bytes of thumbnail unlinked (0: none)
	problems     []string
	changes      []string
}

// editEXIF checks and edits an EXIF (TIFF) block: Orientation becomes 1 when
// the pixels were rotated (applied > 1), the pixel dimensions are swapped
// for a quarter turn, the thumbnail IFD1 is unlinked and its bytes zeroed,
// malformed parts are dropped, and with software != "" a new IFD0 carrying
// it is appended. It fails only when the block cannot be read at all.
func editEXIF(src []byte, applied int, software string) (*exifResult, error) {
	bo, off0, ok := tiffHeader(src)
	if !ok {
		return nil, fmt.Errorf("no valid TIFF header")
	}
	e := &exifEdit{t: clone(src), bo: bo, ifds: map[string]uint64{}, visited: map[uint64]string{}}
	e.kept = append(e.kept, span{0, 8})
	if err := e.walk("IFD0", off0); err != nil {
		return nil, err
	}
	r := &exifResult{entries: e.entries, makerNote: e.mnote}
	_, r.gps = e.ifds["GPS IFD"]
	ifd0 := e.ifds["IFD0"]

	if p, ok := e.find(ifd0, tagOrientation); ok {
		r.orientation = int(e.scalar(p))
		switch {
		case applied > 1 && r.orientation != 1:
			e.setScalar(p, 1)
			e.changes = append(e.changes, fmt.Sprintf("EXIF Orientation %d -> 1 (the pixels are rotated)", r.orientation))
		case r.orientation < 1 || r.orientation > 8:
			// Decoding took it as 1 (no rotation): say so.
			e.setScalar(p, 1)
			e.changes = append(e.changes, fmt.Sprintf("EXIF Orientation %d (not 1..8) -> 1", r.orientation))
		}
	}
	if applied >= 5 && applied <= 8 {
		e.swap(ifd0, tagImageWidth, tagImageLength)
		if x, ok := e.ifds["Exif IFD"]; ok {
			e.swap(x, tagPixelX, tagPixelY)
		}
	}
	r.thumbDropped = e.dropIFD1(ifd0)

	if software != "" {
		r.oldSoftware = e.rebuildIFD0(ifd0, software)
	} else {
		e.zeroStrayJPEGs()
		e.trimTail()
	}
	r.tiff, r.problems, r.changes = e.t, e.problems, e.changes
	return r, nil
}

func (e *exifEdit) u16(p uint64) uint16 { return e.bo.Uint16(e.t[p:]) }
func (e *exifEdit) u32(p uint64) uint32 { return e.bo.Uint32(e.t[p:]) }

// walk checks the IFD at off and the IFDs it points to. An error means the
// IFD table itself is unusable (the caller drops the pointer to it); a bad
// entry inside is dropped from the table, with a problem noted.
func (e *exifEdit) walk(name string, off uint64) error {
	size := uint64(len(e.t))
	if off < 8 || off+2 > size {
		return fmt.Errorf("%s offset %d is outside the %d-byte EXIF block", name, off, size)
	}
	if prev, ok := e.visited[off]; ok {
		return fmt.Errorf("%s points at offset %d, which is %s already (an IFD loop)", name, off, prev)
	}
	n := uint64(e.u16(off))
	end := off + 2 + 12*n + 4
	if end > size {
		return fmt.Errorf("%s at offset %d: %d entries run past the end of the %d-byte EXIF block", name, off, n, size)
	}
	for _, tb := range e.tables {
		if off < tb.b && tb.a < end {
			return fmt.Errorf("%s at offset %d overlaps %s", name, off, e.visited[tb.a])
		}
	}
	e.visited[off] = name
	e.ifds[name] = off
	e.tables = append(e.tables, span{off, end})
	e.kept = append(e.kept, span{off, end})
	var drop []uint64
	for k := uint64(0); k < n; k++ {
		p := off + 2 + 12*k
		tag, typ, cnt := e.u16(p), e.u16(p+2), uint64(e.u32(p+4))
		var val span // out-of-line value, kept with the entry
		if typ >= 1 && typ <= 13 {
			if vs := cnt * tiffTypeSize[typ]; vs > 4 {
				vo := uint64(e.u32(p + 8))
				if cnt > size || vo+vs > size {
					e.problems = append(e.problems, fmt.Sprintf("EXIF %s tag 0x%04X: value at offset %d (+%d bytes) is outside the %d-byte block; tag dropped", name, tag, vo, cnt*tiffTypeSize[typ], size))
					drop = append(drop, p)
					continue
				}
				val = span{vo, vo + vs}
			}
		}
		if sub, ok := subIFDs[name][tag]; ok {
			if (typ != 4 && typ != 13) || cnt != 1 {
				e.problems = append(e.problems, fmt.Sprintf("EXIF %s pointer (tag 0x%04X) has type %d count %d; %s dropped", sub, tag, typ, cnt, sub))
				drop = append(drop, p)
				continue
			}
			if err := e.walk(sub, uint64(e.u32(p+8))); err != nil {
				e.problems = append(e.problems, fmt.Sprintf("EXIF %s dropped: %v", sub, err))
				drop = append(drop, p)
				continue
			}
		}
		if val.b > 0 {
			e.kept = append(e.kept, val)
			if tag == tagMakerNote {
				e.mnote = int(val.b - val.a)
			}
		}
		e.entries++
	}
	e.removeEntries(off, drop)
	return nil
}

// removeEntries takes entries (by position) out of the IFD at off in place:
// later entries and the next-IFD pointer move up, the freed tail is zeroed.
func (e *exifEdit) removeEntries(off uint64, drop []uint64) {
	for k := len(drop) - 1; k >= 0; k-- {
		p := drop[k]
		n := uint64(e.u16(off))
		end := off + 2 + 12*n + 4
		copy(e.t[p:], e.t[p+12:end])
		clear(e.t[end-12 : end])
		e.bo.PutUint16(e.t[off:], uint16(n-1))
		for i, k := range e.kept {
			if k == (span{off, end}) {
				e.kept[i].b = end - 12
			}
		}
	}
}

// find returns the position of tag's entry in the IFD at off.
func (e *exifEdit) find(off uint64, tag uint16) (uint64, bool) {
	n := uint64(e.u16(off))
	for k := uint64(0); k < n; k++ {
		if p := off + 2 + 12*k; e.u16(p) == tag {
			return p, true
		}
	}
	return 0, false
}

// scalar reads a SHORT or LONG count-1 value held in the entry (0 for
// any other entry).
func (e *exifEdit) scalar(p uint64) uint32 {
	if e.u32(p+4) != 1 {
		return 0
	}
	switch e.u16(p + 2) {
	case 3:
		return uint32(e.u16(p + 8))
	case 4:
		return e.u32(p + 8)
	}
	return 0
}

func (e *exifEdit) setScalar(p uint64, v uint32) {
	if e.u32(p+4) != 1 {
		return
	}
	switch e.u16(p + 2) {
	case 3:
		e.bo.PutUint16(e.t[p+8:], uint16(v))
		e.bo.PutUint16(e.t[p+10:], 0)
	case 4:
		e.bo.PutUint32(e.t[p+8:], v)
	}
}

// swap exchanges the values of two entries (type, count and value field;
// the tags keep their places, so the table stays sorted).
func (e *exifEdit) swap(off uint64, a, b uint16) {
	pa, okA := e.find(off, a)
	pb, okB := e.find(off, b)
	if !okA || !okB || e.u32(pa+4) != 1 || e.u32(pb+4) != 1 {
		return
	}
	va, vb := e.scalar(pa), e.scalar(pb)
	var tmp [10]byte
	copy(tmp[:], e.t[pa+2:pa+12])
	copy(e.t[pa+2:pa+12], e.t[pb+2:pb+12])
	copy(e.t[pb+2:pb+12], tmp[:])
	e.changes = append(e.changes, fmt.Sprintf("EXIF 0x%04X/0x%04X %dx%d -> %dx%d (quarter turn applied)", a, b, va, vb, vb, va))
}

// dropIFD1 unlinks the IFD after IFD0 (the thumbnail) and zeroes its table,
// values and image data wherever they do not overlap what is kept. It
// returns the thumbnail's size in bytes.
func (e *exifEdit) dropIFD1(ifd0 uint64) int {
	nextPos := ifd0 + 2 + 12*uint64(e.u16(ifd0))
	off := uint64(e.u32(nextPos))
	if off == 0 {
		return 0
	}
	e.bo.PutUint32(e.t[nextPos:], 0)
	size := uint64(len(e.t))
	if off < 8 || off+2 > size || off+2+12*uint64(e.u16(off))+4 > size {
		e.changes = append(e.changes, "EXIF IFD1 (thumbnail) unlinked; its offset was outside the block")
		return 0
	}
	n := uint64(e.u16(off))
	free := []span{{off, off + 2 + 12*n + 4}}
	var thumbOff, thumbLen uint64
	var strips, counts []uint64
	for k := uint64(0); k < n; k++ {
		p := off + 2 + 12*k
		tag, typ, cnt := e.u16(p), e.u16(p+2), uint64(e.u32(p+4))
		if typ < 1 || typ > 13 || cnt > size {
			continue
		}
		vs := cnt * tiffTypeSize[typ]
		vo := p + 8
		if vs > 4 {
			vo = uint64(e.u32(p + 8))
			if vo+vs > size {
				continue
			}
			free = append(free, span{vo, vo + vs})
		}
		switch tag {
		case tagThumbOffset:
			thumbOff = uint64(e.scalar(p))
		case tagThumbLength:
			thumbLen = uint64(e.scalar(p))
		case tagStripOffs, tagStripCounts:
			vals := make([]uint64, 0, cnt)
			for i := uint64(0); i < cnt && (typ == 3 || typ == 4); i++ {
				if typ == 3 {
					vals = append(vals, uint64(e.u16(vo+2*i)))
				} else {
					vals = append(vals, uint64(e.u32(vo+4*i)))
				}
			}
			if tag == tagStripOffs {
				strips = vals
			} else {
				counts = vals
			}
		}
	}
	var bytes int
	if thumbLen > 0 && thumbOff+thumbLen <= size {
		free = append(free, span{thumbOff, thumbOff + thumbLen})
		bytes += int(thumbLen)
	}
	for i := 0; i < len(strips) && i < len(counts); i++ {
		if strips[i]+counts[i] <= size {
			free = append(free, span{strips[i], strips[i] + counts[i]})
			bytes += int(counts[i])
		}
	}
	for _, f := range free {
		if !e.overlapsKept(f) {
			clear(e.t[f.a:f.b])
		}
	}
	e.changes = append(e.changes, fmt.Sprintf("EXIF thumbnail dropped (%d bytes of the blurry frame)", bytes))
	return bytes
}

// zeroStrayJPEGs zeroes embedded JPEG images (SOI to EOI) in the bytes no
// kept structure references: a thumbnail whose IFD1 pointer was broken, or
// a preview some writer left behind. Unreferenced, no reader shows them,
// but they are still pictures of the blurry frame in the file.
func (e *exifEdit) zeroStrayJPEGs() {
	ks := slices.Clone(e.kept)
	sort.Slice(ks, func(i, j int) bool { return ks[i].a < ks[j].a })
	var pos uint64
	gap := func(a, b uint64) {
		for a+3 <= b {
			i := bytes.Index(e.t[a:b], []byte{0xFF, 0xD8, 0xFF})
			if i < 0 {
				return
			}
			s := a + uint64(i)
			end := b
			if j := bytes.Index(e.t[s:b], []byte{0xFF, 0xD9}); j >= 0 {
				end = s + uint64(j) + 2
			}
			clear(e.t[s:end])
			e.changes = append(e.changes, fmt.Sprintf("EXIF unreferenced embedded JPEG zeroed (%d bytes at offset %d)", end-s, s))
			a = end
		}
	}
	for _, k := range ks {
		if k.a > pos {
			gap(pos, min(k.a, uint64(len(e.t))))
		}
		pos = max(pos, k.b)
	}
	gap(pos, uint64(len(e.t)))
}

func (e *exifEdit) overlapsKept(f span) bool {
	for _, k := range e.kept {
		if f.a < k.b && k.a < f.b {
			return true
		}
	}
	return false
}

// rebuildIFD0 appends a copy of IFD0 with Software set (and no next IFD),
// points the header at it and zeroes the old table. It returns the old
// Software text ("" if none).
func (e *exifEdit) rebuildIFD0(ifd0 uint64, software string) string {
	n := uint64(e.u16(ifd0))
	oldTable := span{ifd0, ifd0 + 2 + 12*n + 4}
	type entry [12]byte
	var ents []entry
	old := ""
	unused := []span{oldTable}
	for k := uint64(0); k < n; k++ {
		p := ifd0 + 2 + 12*k
		var en entry
		copy(en[:], e.t[p:p+12])
		if e.u16(p) == tagSoftware {
			old = e.ascii(p)
			if typ, cnt := e.u16(p+2), uint64(e.u32(p+4)); typ >= 1 && typ <= 13 && cnt*tiffTypeSize[typ] > 4 {
				vo := uint64(e.u32(p + 8))
				unused = append(unused, span{vo, vo + cnt*tiffTypeSize[typ]})
			}
			continue
		}
		ents = append(ents, en)
	}
	// The old table and Software text are no longer referenced: take them
	// out of the kept spans so the tail can be trimmed, and zero them
	// where nothing else uses the bytes.
	for _, u := range unused {
		for i, k := range e.kept {
			if k == u {
				e.kept = append(e.kept[:i], e.kept[i+1:]...)
				break
			}
		}
	}
	for _, u := range unused {
		if !e.overlapsKept(u) {
			clear(e.t[u.a:u.b])
		}
	}
	e.zeroStrayJPEGs()
	e.trimTail()
	if len(e.t)%2 == 1 {
		e.t = append(e.t, 0)
	}

	sw := append([]byte(software), 0)
	var sv entry
	e.bo.PutUint16(sv[0:], tagSoftware)
	e.bo.PutUint16(sv[2:], 2)
	e.bo.PutUint32(sv[4:], uint32(len(sw)))
	at := uint64(len(e.t))
	tableLen := 2 + 12*uint64(len(ents)+1) + 4
	if len(sw) <= 4 {
		copy(sv[8:], sw)
	} else {
		e.bo.PutUint32(sv[8:], uint32(at+tableLen))
	}
	ents = append(ents, sv)
	sort.SliceStable(ents, func(i, j int) bool { return e.bo.Uint16(ents[i][:]) < e.bo.Uint16(ents[j][:]) })
	var cnt [2]byte
	e.bo.PutUint16(cnt[:], uint16(len(ents)))
	e.t = append(e.t, cnt[:]...)
	for _, en := range ents {
		e.t = append(e.t, en[:]...)
	}
	e.t = append(e.t, 0, 0, 0, 0) // no next IFD
	if len(sw) > 4 {
		e.t = append(e.t, sw...)
	}
	e.bo.PutUint32(e.t[4:], uint32(at))
	e.kept = append(e.kept, span{at, uint64(len(e.t))})
	e.ifds["IFD0"] = at
	if old != software {
		if old == "" {
			e.changes = append(e.changes, "EXIF Software added: "+software)
		} else {
			e.changes = append(e.changes, fmt.Sprintf("EXIF Software %q -> %q", old, software))
		}
	}
	return old
}

// ascii reads an ASCII entry's text (up to its first NUL).
func (e *exifEdit) ascii(p uint64) string {
	if e.u16(p+2) != 2 {
		return ""
	}
	cnt := uint64(e.u32(p + 4))
	vo := p + 8
	if cnt > 4 {
		vo = uint64(e.u32(p + 8))
	}
	if cnt > uint64(len(e.t)) || vo+cnt > uint64(len(e.t)) {
		return ""
	}
	b := e.t[vo : vo+cnt]
	for i, c := range b {
		if c == 0 {
			b = b[:i]
			break
		}
	}
	return printable(string(b), 512)
}

// trimTail cuts zero bytes past the last kept structure (typically the
// zeroed thumbnail at the end of the block). Unknown non-zero bytes there
// are left alone: a maker note may point at them.
func (e *exifEdit) trimTail() {
	var end uint64 = 8
	for _, k := range e.kept {
		end = max(end, k.b)
	}
	n := uint64(len(e.t))
	for n > end && e.t[n-1] == 0 {
		n--
	}
	e.t = e.t[:n]
}

// newEXIF is a minimal EXIF block for outputs whose source had none: IFD0
// with the tags EXIF requires of a JPEG (resolution, 72 dpi being EXIF's
// "unknown"; YCbCrPositioning centred, as image/jpeg samples) and Software.
// Big-endian, like most cameras.
func newEXIF(software string) []byte {
	bo := binary.BigEndian
	sw := append([]byte(software), 0)
	const n = 5
	vals := uint32(8 + 2 + 12*n + 4)
	t := []byte{'M', 'M', 0, 42, 0, 0, 0, 8}
	t = bo.AppendUint16(t, n)
	entry := func(tag, typ uint16, count, value uint32, short bool) {
		t = bo.AppendUint16(t, tag)
		t = bo.AppendUint16(t, typ)
		t = bo.AppendUint32(t, count)
		if short {
			t = bo.AppendUint16(t, uint16(value))
			t = append(t, 0, 0)
		} else {
			t = bo.AppendUint32(t, value)
		}
	}
	entry(0x011A, 5, 1, vals, false)
	entry(0x011B, 5, 1, vals+8, false)
	entry(0x0128, 3, 1, 2, true)
	if len(sw) <= 4 {
		entry(tagSoftware, 2, uint32(len(sw)), bo.Uint32(append(sw, 0, 0, 0)[:4]), false)
	} else {
		entry(tagSoftware, 2, uint32(len(sw)), vals+16, false)
	}
	entry(0x0213, 3, 1, 1, true)
	t = bo.AppendUint32(t, 0)
	t = bo.AppendUint32(bo.AppendUint32(t, 72), 1)
	t = bo.AppendUint32(bo.AppendUint32(t, 72), 1)
	if len(sw) > 4 {
		t = append(t, sw...)
	}
	return t
}
