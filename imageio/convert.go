package imageio

import (
	"image"
	"image/color"
)

// lut8 maps an 8-bit sample to float32 exactly as numpy's
// arr.astype(float32)/255 does (a correctly rounded float32 division), so the
// Python reference and the daemon see the same input.
var lut8 = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return
}()

func f16(v uint16) float32 { return float32(v) / 65535 }

// orienter maps source pixel (x, y) to its index in the oriented output
// plane. Along a source row the destination index moves by a constant step,
// so the hot loops only add. Orientation values are EXIF's:
//
//	1 normal            dest (x, y)
//	2 mirror horizontal dest (w-1-x, y)
//	3 rotate 180        dest (w-1-x, h-1-y)
//	4 mirror vertical   dest (x, h-1-y)
//	5 transpose         dest (y, x)
//	6 rotate 90 CW      dest (h-1-y, x)
//	7 transverse        dest (h-1-y, w-1-x)
//	8 rotate 90 CCW     dest (y, w-1-x)
//
// where w, h is the stored size; 5..8 give an h x w output.
type orienter struct {
	w, h   int // stored size
	orient int
}

func (o orienter) size() (w, h int) {
	if o.orient >= 5 {
		return o.h, o.w
	}
	return o.w, o.h
}

// row returns the destination index of source pixel (0, y) and the index step
// per source x.
func (o orienter) row(y int) (base, step int) {
	w, h := o.w, o.h
	switch o.orient {
	case 2:
		return y*w + w - 1, -1
	case 3:
		return (h-1-y)*w + w - 1, -1
	case 4:
		return (h - 1 - y) * w, 1
	case 5:
		return y, h
	case 6:
		return h - 1 - y, h
	case 7:
		return (w-1)*h + h - 1 - y, -h
	case 8:
		return (w-1)*h + y, -h
	default:
		return y * w, 1
	}
}

// toPlanar converts a decoded image to oriented planar float32 RGB and
// reports the source bit depth. The concrete types the standard JPEG and PNG
// decoders return have fast paths; anything else (CMYK JPEG) goes through the
// generic color model, which is slow but rare.
//
// Alpha is DROPPED, not composited: the straight (non-premultiplied) colour
// is kept as is. Camera frames carry no meaningful alpha, and this is what
// PIL's Image.convert("RGB") does, which the Python reference uses. The PNG
// decoder returns *image.RGBA / *image.RGBA64 only for opaque truecolor, so
// reading their colour channels directly is also dropping alpha.
func toPlanar(src image.Image, orient int) (*Image, int) {
	b := src.Bounds()
	if orient < 1 || orient > 8 {
		orient = 1
	}
	o := orienter{w: b.Dx(), h: b.Dy(), orient: orient}
	dw, dh := o.size()
	img := &Image{W: dw, H: dh, Pix: make([]float32, 3*dw*dh)}
	R, G, B := img.Planes()
	w, h := o.w, o.h
	if b.Min != (image.Point{}) {
		genericToPlanar(src, o, R, G, B)
		return img, 8
	}
	switch m := src.(type) {
	case *image.YCbCr:
		if !ycbcrToPlanar(m, o, R, G, B) {
			genericToPlanar(src, o, R, G, B)
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			d, step := o.row(y)
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			for _, v := range row {
				f := lut8[v]
				R[d], G[d], B[d] = f, f, f
				d += step
			}
		}
	case *image.RGBA:
		rgba8(m.Pix, m.Stride, o, R, G, B)
	case *image.NRGBA:
		rgba8(m.Pix, m.Stride, o, R, G, B)
	case *image.Paletted:
		var pal [256][3]float32
		for i, c := range m.Palette {
			if i == 256 {
				break
			}
			// Drop alpha: take the straight colour of the palette entry.
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			pal[i] = [3]float32{lut8[n.R], lut8[n.G], lut8[n.B]}
		}
		for y := 0; y < h; y++ {
			d, step := o.row(y)
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			for _, v := range row {
				p := &pal[v] // out-of-palette indices read as black, as image/png would allow
				R[d], G[d], B[d] = p[0], p[1], p[2]
				d += step
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			d, step := o.row(y)
			row := m.Pix[y*m.Stride : y*m.Stride+2*w]
			for x := 0; x < len(row); x += 2 {
				f := f16(uint16(row[x])<<8 | uint16(row[x+1]))
				R[d], G[d], B[d] = f, f, f
				d += step
			}
		}
		return img, 16
	case *image.RGBA64:
		rgba16(m.Pix, m.Stride, o, R, G, B)
		return img, 16
	case *image.NRGBA64:
		rgba16(m.Pix, m.Stride, o, R, G, B)
		return img, 16
	default:
		genericToPlanar(src, o, R, G, B)
	}
	return img, 8
}

// rgba8 handles the 4-bytes-per-pixel layouts (RGBA and NRGBA), ignoring A.
func rgba8(pix []uint8, stride int, o orienter, R, G, B []float32) {
	for y := 0; y < o.h; y++ {
		d, step := o.row(y)
		row := pix[y*stride : y*stride+4*o.w]
		for x := 0; x+3 < len(row); x += 4 {
			R[d], G[d], B[d] = lut8[row[x]], lut8[row[x+1]], lut8[row[x+2]]
			d += step
		}
	}
}

// rgba16 handles the 8-bytes-per-pixel big-endian layouts, ignoring A.
func rgba16(pix []uint8, stride int, o orienter, R, G, B []float32) {
	for y := 0; y < o.h; y++ {
		d, step := o.row(y)
		row := pix[y*stride : y*stride+8*o.w]
		for x := 0; x+7 < len(row); x += 8 {
			R[d] = f16(uint16(row[x])<<8 | uint16(row[x+1]))
			G[d] = f16(uint16(row[x+2])<<8 | uint16(row[x+3]))
			B[d] = f16(uint16(row[x+4])<<8 | uint16(row[x+5]))
			d += step
		}
	}
}

// ycbcrToPlanar converts with the same integer formula as
// color.YCbCrToRGB (JFIF, what image/jpeg's own RGBA conversion uses), with
// the chroma index computed per row instead of per pixel. It reports false
// for a subsampling ratio it does not know.
func ycbcrToPlanar(m *image.YCbCr, o orienter, R, G, B []float32) bool {
	var hs, vs uint
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio444:
	case image.YCbCrSubsampleRatio422:
		hs = 1
	case image.YCbCrSubsampleRatio420:
		hs, vs = 1, 1
	case image.YCbCrSubsampleRatio440:
		vs = 1
	case image.YCbCrSubsampleRatio411:
		hs = 2
	case image.YCbCrSubsampleRatio410:
		hs, vs = 2, 1
	default:
		return false
	}
	w := o.w
	cw := (w + (1 << hs) - 1) >> hs
	for y := 0; y < o.h; y++ {
		d, step := o.row(y)
		yrow := m.Y[y*m.YStride : y*m.YStride+w]
		ci := (y >> vs) * m.CStride
		cbrow := m.Cb[ci : ci+cw]
		crrow := m.Cr[ci : ci+cw]
		if step == 1 {
			// Upright frames (nearly all) write whole rows; slicing the rows
			// lets the compiler drop the bounds checks in the loop.
			rr, gr, br := R[d:d+w], G[d:d+w], B[d:d+w]
			for x := range rr {
				// ycc, written out: the compiler will not inline it.
				yy1 := int32(yrow[x]) * 0x10101
				cb1 := int32(cbrow[x>>hs]) - 128
				cr1 := int32(crrow[x>>hs]) - 128
				rr[x] = lut8[clip16(yy1+91881*cr1)]
				gr[x] = lut8[clip16(yy1-22554*cb1-46802*cr1)]
				br[x] = lut8[clip16(yy1+116130*cb1)]
			}
			continue
		}
		for x, yv := range yrow {
			r, g, b := ycc(yv, cbrow[x>>hs], crrow[x>>hs])
			R[d], G[d], B[d] = lut8[r], lut8[g], lut8[b]
			d += step
		}
	}
	return true
}

// ycc is color.YCbCrToRGB restated with clip16, which inlines; the upright
// loop above writes it out by hand because calls there cost a third of the
// conversion time. TestYCCMatchesStdlib checks all 2^24 inputs.
func ycc(y, cb, cr uint8) (uint8, uint8, uint8) {
	yy1 := int32(y) * 0x10101
	cb1 := int32(cb) - 128
	cr1 := int32(cr) - 128
	return clip16(yy1 + 91881*cr1), clip16(yy1 - 22554*cb1 - 46802*cr1), clip16(yy1 + 116130*cb1)
}

// clip16 is v>>16 clamped to [0,255], branch-light as in image/color.
func clip16(v int32) uint8 {
	if uint32(v)&0xff000000 == 0 {
		return uint8(v >> 16)
	}
	return uint8(^(v >> 31))
}

// genericToPlanar is the slow path through image.At for types the standard
// decoders rarely produce (CMYK JPEG). NRGBA64 keeps 16-bit precision and
// un-premultiplies, i.e. it drops alpha like the fast paths.
func genericToPlanar(src image.Image, o orienter, R, G, B []float32) {
	b := src.Bounds()
	for y := 0; y < o.h; y++ {
		d, step := o.row(y)
		for x := 0; x < o.w; x++ {
			c := color.NRGBA64Model.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
			R[d], G[d], B[d] = f16(c.R), f16(c.G), f16(c.B)
			d += step
		}
	}
}
