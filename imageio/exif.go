package imageio

import "encoding/binary"

// jpegOrientation walks the JPEG marker segments from SOI up to the first
// SOS and returns the EXIF orientation (1..8) from the first APP1 "Exif"
// segment that has one. Anything malformed (bad lengths, offsets out of range,
// unknown byte order, values outside 1..8) means "no orientation": 1. EXIF is
// advisory metadata and must never make a readable image fail or crash us.
func jpegOrientation(data []byte) int {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 1
	}
	i := 2
	for i < len(data) {
		if data[i] != 0xFF {
			return 1 // not at a marker: the segment chain is broken
		}
		for i < len(data) && data[i] == 0xFF { // fill bytes before a marker
			i++
		}
		if i >= len(data) {
			return 1
		}
		marker := data[i]
		i++
		switch {
		case marker == 0xD8, marker == 0x01, marker >= 0xD0 && marker <= 0xD7:
			continue // standalone markers have no length
		case marker == 0xDA, marker == 0xD9:
			return 1 // start of scan / end of image: EXIF comes before these
		}
		if i+2 > len(data) {
			return 1
		}
		n := int(binary.BigEndian.Uint16(data[i:]))
		if n < 2 || i+n > len(data) {
			return 1
		}
		seg := data[i+2 : i+n]
		i += n
		if marker == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			if o := tiffOrientation(seg[6:]); o != 0 {
				return o
			}
		}
	}
	return 1
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF structure (the body of
// an EXIF APP1 segment). It returns 0 when the tag is absent or invalid.
func tiffOrientation(t []byte) int {
	bo, off, ok := tiffHeader(t)
	if !ok || off+2 > uint64(len(t)) {
		return 0
	}
	count := int(bo.Uint16(t[off:]))
	p := int(off) + 2
	for k := 0; k < count && p+12 <= len(t); k, p = k+1, p+12 {
		e := t[p : p+12]
		if bo.Uint16(e[0:]) != 0x0112 {
			continue
		}
		var v uint32
		switch typ, n := bo.Uint16(e[2:]), bo.Uint32(e[4:]); {
		case typ == 3 && n >= 1: // SHORT, left-justified in the value field
			v = uint32(bo.Uint16(e[8:]))
		case typ == 4 && n >= 1: // LONG: wrong per spec, but seen in the wild
			v = bo.Uint32(e[8:])
		default:
			return 0
		}
		if v >= 1 && v <= 8 {
			return int(v)
		}
		return 0
	}
	return 0
}

// tiffHeader reads a TIFF header: the byte order ("II" or "MM", then 42)
// and the offset of IFD0, which must lie after the header.
func tiffHeader(t []byte) (bo binary.ByteOrder, ifd0 uint64, ok bool) {
	if len(t) < 8 {
		return nil, 0, false
	}
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return nil, 0, false
	}
	if bo.Uint16(t[2:]) != 42 {
		return nil, 0, false
	}
	ifd0 = uint64(bo.Uint32(t[4:]))
	return bo, ifd0, ifd0 >= 8
}
