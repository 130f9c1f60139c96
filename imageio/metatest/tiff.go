// Package metatest builds real-format test files with metadata for the
// tests of imageio, the daemon and the binary: EXIF (TIFF) blocks with GPS,
// a maker note that points into the block, and a thumbnail; ICC profiles;
// XMP packets; and JPEG and PNG files carrying them. It writes the bytes
// itself, the way cameras lay them out, so the tests do not depend on the
// code under test to make their input.
package metatest

import (
	"encoding/binary"
)

// TIFF field types.
const (
	Byte      = 1
	ASCII     = 2
	Short     = 3
	Long      = 4
	Rational  = 5
	Undefined = 7
	SRational = 10
)

// Entry is one IFD entry. Exactly one of Value, Sub, Blob or Make says
// what it holds:
//   - Value: the value bytes in the block's byte order (inline if <= 4);
//   - Sub: an IFD written elsewhere, the entry a LONG offset to it;
//   - Blob: bytes written elsewhere, the entry a LONG offset to them
//     (JPEGInterchangeFormat);
//   - Make: the value is made once its offset is known (a maker note
//     whose inner offsets count from the start of the block), Count bytes.
type Entry struct {
	Tag   uint16
	Type  uint16
	Count uint32
	Value []byte
	Sub   *IFD
	Blob  []byte
	Make  func(at uint32) []byte
}

// IFD is a list of entries (written in the given order) and the next IFD.
type IFD struct {
	Entries []Entry
	Next    *IFD
}

// TIFF writes an EXIF block (TIFF header, IFD0 at offset 8, then values
// and the other IFDs after it).
func TIFF(bo binary.ByteOrder, ifd0 *IFD) []byte {
	w := &tw{bo: bo}
	if bo == binary.LittleEndian {
		w.b = []byte{'I', 'I', 42, 0, 8, 0, 0, 0}
	} else {
		w.b = []byte{'M', 'M', 0, 42, 0, 0, 0, 8}
	}
	w.ifd(ifd0)
	return w.b
}

type tw struct {
	bo binary.ByteOrder
	b  []byte
}

func (w *tw) align() {
	if len(w.b)%2 == 1 {
		w.b = append(w.b, 0)
	}
}

func (w *tw) ifd(d *IFD) uint32 {
	w.align()
	off := uint32(len(w.b))
	n := len(d.Entries)
	w.b = append(w.b, make([]byte, 2+12*n+4)...)
	w.bo.PutUint16(w.b[off:], uint16(n))
	for k, e := range d.Entries {
		p := off + 2 + 12*uint32(k)
		w.bo.PutUint16(w.b[p:], e.Tag)
		typ, cnt := e.Type, e.Count
		var val [4]byte
		switch {
		case e.Sub != nil:
			typ, cnt = Long, 1
			w.bo.PutUint32(val[:], w.ifd(e.Sub))
		case e.Blob != nil:
			typ, cnt = Long, 1
			w.align()
			w.bo.PutUint32(val[:], uint32(len(w.b)))
			w.b = append(w.b, e.Blob...)
		case e.Make != nil:
			w.align()
			at := uint32(len(w.b))
			w.bo.PutUint32(val[:], at)
			w.b = append(w.b, e.Make(at)...)
		case len(e.Value) > 4:
			w.align()
			w.bo.PutUint32(val[:], uint32(len(w.b)))
			w.b = append(w.b, e.Value...)
		default:
			copy(val[:], e.Value)
		}
		w.bo.PutUint16(w.b[p+2:], typ)
		w.bo.PutUint32(w.b[p+4:], cnt)
		copy(w.b[p+8:], val[:])
	}
	if d.Next != nil {
		next := w.ifd(d.Next) // appends: take the slice of w.b after it
		w.bo.PutUint32(w.b[off+2+12*uint32(n):], next)
	}
	return off
}

// Values in a byte order.

// Str is an ASCII entry (NUL-terminated).
func Str(tag uint16, s string) Entry {
	return Entry{Tag: tag, Type: ASCII, Count: uint32(len(s) + 1), Value: append([]byte(s), 0)}
}

// Shorts is a SHORT entry.
func Shorts(bo binary.ByteOrder, tag uint16, v ...uint16) Entry {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		bo.PutUint16(b[2*i:], x)
	}
	return Entry{Tag: tag, Type: Short, Count: uint32(len(v)), Value: b}
}

// Longs is a LONG entry.
func Longs(bo binary.ByteOrder, tag uint16, v ...uint32) Entry {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		bo.PutUint32(b[4*i:], x)
	}
	return Entry{Tag: tag, Type: Long, Count: uint32(len(v)), Value: b}
}

// Rationals is a RATIONAL entry from numerator, denominator pairs.
func Rationals(bo binary.ByteOrder, tag uint16, nd ...uint32) Entry {
	b := make([]byte, 4*len(nd))
	for i, x := range nd {
		bo.PutUint32(b[4*i:], x)
	}
	return Entry{Tag: tag, Type: Rational, Count: uint32(len(nd) / 2), Value: b}
}

// Bytes is an UNDEFINED entry.
func Bytes(tag uint16, b []byte) Entry {
	return Entry{Tag: tag, Type: Undefined, Count: uint32(len(b)), Value: b}
}
