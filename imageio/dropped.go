package imageio

import (
	"encoding/binary"
	"fmt"
	"image"
)

// dropped lists what a decoded frame carries that the result will not: a
// (non-opaque) alpha channel, the further frames of an animated PNG, and a
// PNG's eXIf orientation (only JPEG's EXIF orientation is applied). The
// daemon and `hidiffd deblur` log each item with the frame's name.
func dropped(data []byte, format string, src image.Image) []string {
	var out []string
	if n := transparentPixels(src); n > 0 {
		out = append(out, fmt.Sprintf("alpha channel: %d pixels are not opaque; the colour is kept as is, not composited", n))
	}
	if format != FormatPNG || len(data) < 8 {
		return out
	}
	// Walk the chunks (length, type, data, CRC) up to IEND.
	for b := data[8:]; len(b) >= 12; {
		n := int(binary.BigEndian.Uint32(b))
		if n < 0 || n+12 > len(b) {
			break
		}
		typ, body := string(b[4:8]), b[8:8+n]
		switch typ {
		case "acTL":
			if len(body) >= 4 {
				if frames := binary.BigEndian.Uint32(body); frames > 1 {
					out = append(out, fmt.Sprintf("animated PNG: %d frames; only the default image is deblurred", frames))
				}
			}
		case "eXIf":
			if o := tiffOrientation(body); o > 1 {
				out = append(out, fmt.Sprintf("PNG eXIf orientation %d is not applied (only a JPEG's EXIF orientation is)", o))
			}
		}
		if typ == "IEND" {
			break
		}
		b = b[n+12:]
	}
	return out
}

// transparentPixels counts the pixels whose alpha is below opaque, for the
// image types the PNG decoder returns with an alpha channel.
func transparentPixels(src image.Image) int {
	n := 0
	switch m := src.(type) {
	case *image.NRGBA:
		for i := 3; i < len(m.Pix); i += 4 {
			if m.Pix[i] != 0xff {
				n++
			}
		}
	case *image.NRGBA64:
		for i := 6; i < len(m.Pix); i += 8 {
			if m.Pix[i] != 0xff || m.Pix[i+1] != 0xff {
				n++
			}
		}
	case *image.Paletted:
		clear := make([]bool, len(m.Palette))
		some := false
		for i, c := range m.Palette {
			if _, _, _, a := c.RGBA(); a != 0xffff {
				clear[i], some = true, true
			}
		}
		if some {
			for _, p := range m.Pix {
				if int(p) < len(clear) && clear[p] {
					n++
				}
			}
		}
	}
	return n
}
