package imageio

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// checkICC checks what a colour-managed reader relies on in an ICC profile
// (ICC.1:2022 section 7): the size in the header is the profile's length,
// the 'acsp' signature, and a tag table whose entries lie inside it.
func checkICC(p []byte) error {
	if len(p) < 132 {
		return fmt.Errorf("%d bytes, shorter than the 132-byte header and tag count", len(p))
	}
	if n := binary.BigEndian.Uint32(p); int64(n) != int64(len(p)) {
		return fmt.Errorf("header says %d bytes, the profile has %d", n, len(p))
	}
	if string(p[36:40]) != "acsp" {
		return fmt.Errorf("no 'acsp' signature")
	}
	count := uint64(binary.BigEndian.Uint32(p[128:]))
	if 132+12*count > uint64(len(p)) {
		return fmt.Errorf("tag table of %d entries runs past the end", count)
	}
	for k := uint64(0); k < count; k++ {
		e := p[132+12*k:]
		off, size := uint64(binary.BigEndian.Uint32(e[4:])), uint64(binary.BigEndian.Uint32(e[8:]))
		if off+size > uint64(len(p)) {
			return fmt.Errorf("tag %q at %d+%d runs past the end (%d bytes)", e[:4], off, size, len(p))
		}
	}
	return nil
}

// iccDescription is the profile's 'desc' text (v2 textDescriptionType or v4
// multiLocalizedUnicodeType, first record), for reports; "" if none.
func iccDescription(p []byte) string {
	if checkICC(p) != nil {
		return ""
	}
	count := int(binary.BigEndian.Uint32(p[128:]))
	for k := 0; k < count; k++ {
		e := p[132+12*k:]
		if string(e[:4]) != "desc" {
			continue
		}
		off, size := int(binary.BigEndian.Uint32(e[4:])), int(binary.BigEndian.Uint32(e[8:]))
		t := p[off : off+size]
		switch {
		case len(t) >= 12 && string(t[:4]) == "desc":
			n := int(binary.BigEndian.Uint32(t[8:]))
			if n > 0 && 12+n <= len(t) {
				return printable(strings.TrimRight(string(t[12:12+n]), "\x00"), 64)
			}
		case len(t) >= 28 && string(t[:4]) == "mluc":
			l, o := int(binary.BigEndian.Uint32(t[20:])), int(binary.BigEndian.Uint32(t[24:]))
			if l >= 2 && o+l <= len(t) {
				u := make([]uint16, l/2)
				for i := range u {
					u[i] = binary.BigEndian.Uint16(t[o+2*i:])
				}
				return printable(string(utf16.Decode(u)), 64)
			}
		}
	}
	return ""
}

func printable(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7F {
			return -1
		}
		return r
	}, s)
	if len(s) > limit {
		s = s[:limit]
	}
	return s
}

// iccSegments cuts a profile into APP2 ICC_PROFILE segments (marker
// included), at most 65519 bytes of profile each.
func iccSegments(p []byte) ([][]byte, error) {
	const per = 0xFFFF - 2 - len(jpegICCID) - 2
	n := (len(p) + per - 1) / per
	if n > 255 {
		return nil, fmt.Errorf("a %d-byte profile needs %d JPEG chunks, over 255", len(p), n)
	}
	var segs [][]byte
	for k := 0; k < n; k++ {
		part := p[k*per : min(len(p), (k+1)*per)]
		body := make([]byte, 0, len(jpegICCID)+2+len(part))
		body = append(body, jpegICCID...)
		body = append(body, byte(k+1), byte(n))
		body = append(body, part...)
		segs = append(segs, jpegSegment(0xE2, body))
	}
	return segs, nil
}
