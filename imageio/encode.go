package imageio

import (
	"bufio"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"sync"
)

// DefaultJPEGQuality is used when EncodeOptions.Quality is 0. 95 keeps the
// restored detail without the size of 100.
const DefaultJPEGQuality = 95

// EncodeOptions say how to write an Image. The zero value writes the image in
// its source format and bit depth, JPEG at quality 95.
type EncodeOptions struct {
	Format   string // "" = img.Format; FormatJPEG or FormatPNG
	Quality  int    // JPEG 1..100; 0 = DefaultJPEGQuality
	BitDepth int    // PNG 8 or 16; 0 = img.BitDepth (JPEG is always 8)
	// PNGCompression 0 means png.BestSpeed: PNG is lossless either way, and
	// at 1280x720 zlib's default level cost about 5% of a whole CPU frame
	// (350 ms against 7.4 s of network), time the next frame waits for.
	PNGCompression png.CompressionLevel
	// Meta, from PrepareMetadata for the same format, is written after
	// the JPEG's SOI or the PNG's IHDR; nil writes pixels only.
	Meta *OutputMetadata
}

// pngBuffers lets successive PNG encodes reuse the encoder's zlib and row
// buffers instead of allocating them per frame.
type pngBuffers struct{ p sync.Pool }

func (b *pngBuffers) Get() *png.EncoderBuffer {
	v, _ := b.p.Get().(*png.EncoderBuffer)
	return v
}
func (b *pngBuffers) Put(v *png.EncoderBuffer) { b.p.Put(v) }

var pngPool = &pngBuffers{}

// q8 and q16 quantise a sample: clamp to [0,1] (NaN -> 0), then round to
// nearest as x*max+0.5 truncated, in float32 like numpy's
// (np.clip(x,0,1)*255+0.5).astype(uint8) in the Python reference.
func q8(x float32) uint8 {
	if !(x > 0) {
		return 0
	}
	if x >= 1 {
		return 255
	}
	return uint8(x*255 + 0.5)
}

func q16(x float32) uint16 {
	if !(x > 0) {
		return 0
	}
	if x >= 1 {
		return 65535
	}
	return uint16(x*65535 + 0.5)
}

// Encode writes img to w. Output is always RGB (a gray or paletted source
// becomes RGB: the network's three channels need not stay equal, and
// re-quantising to a palette would throw away the restoration).
func Encode(w io.Writer, img *Image, opts EncodeOptions) error {
	if img == nil || img.W <= 0 || img.H <= 0 || len(img.Pix) != 3*img.W*img.H {
		return newErr(StageEncode, CodeInvalid, nil, "image buffer does not match its size")
	}
	format := opts.Format
	if format == "" {
		format = img.Format
	}
	w, err := opts.Meta.writer(w, format)
	if err != nil {
		return err
	}
	R, G, B := img.Planes()
	n := img.W * img.H
	switch format {
	case FormatJPEG:
		q := opts.Quality
		if q == 0 {
			q = DefaultJPEGQuality
		}
		if q < 1 || q > 100 {
			return newErr(StageEncode, CodeInvalid, nil, "JPEG quality %d outside 1..100", q)
		}
		// *image.RGBA is one of image/jpeg's fast paths.
		m := image.NewRGBA(image.Rect(0, 0, img.W, img.H))
		for i, j := 0, 0; i < n; i, j = i+1, j+4 {
			p := m.Pix[j : j+4 : j+4]
			p[0], p[1], p[2], p[3] = q8(R[i]), q8(G[i]), q8(B[i]), 0xFF
		}
		bw := bufio.NewWriterSize(w, 64<<10)
		if err := jpeg.Encode(bw, m, &jpeg.Options{Quality: q}); err != nil {
			return newErr(StageEncode, CodeIO, err, "write JPEG: %v", err)
		}
		if err := bw.Flush(); err != nil {
			return newErr(StageEncode, CodeIO, err, "write JPEG: %v", err)
		}
		return nil
	case FormatPNG:
		depth := opts.BitDepth
		if depth == 0 {
			depth = img.BitDepth
		}
		if depth == 0 {
			depth = 8
		}
		var m image.Image
		switch depth {
		case 8:
			// Opaque *image.RGBA makes image/png write 8-bit truecolor.
			rgba := image.NewRGBA(image.Rect(0, 0, img.W, img.H))
			for i, j := 0, 0; i < n; i, j = i+1, j+4 {
				p := rgba.Pix[j : j+4 : j+4]
				p[0], p[1], p[2], p[3] = q8(R[i]), q8(G[i]), q8(B[i]), 0xFF
			}
			m = rgba
		case 16:
			// Opaque *image.RGBA64 makes image/png write 16-bit truecolor.
			rgba := image.NewRGBA64(image.Rect(0, 0, img.W, img.H))
			for i, j := 0, 0; i < n; i, j = i+1, j+8 {
				p := rgba.Pix[j : j+8 : j+8]
				r, g, b := q16(R[i]), q16(G[i]), q16(B[i])
				p[0], p[1] = uint8(r>>8), uint8(r)
				p[2], p[3] = uint8(g>>8), uint8(g)
				p[4], p[5] = uint8(b>>8), uint8(b)
				p[6], p[7] = 0xFF, 0xFF
			}
			m = rgba
		default:
			return newErr(StageEncode, CodeInvalid, nil, "PNG bit depth %d is not 8 or 16", depth)
		}
		level := opts.PNGCompression
		if level == 0 {
			level = png.BestSpeed
		}
		enc := png.Encoder{CompressionLevel: level, BufferPool: pngPool}
		bw := bufio.NewWriterSize(w, 64<<10)
		if err := enc.Encode(bw, m); err != nil {
			return newErr(StageEncode, CodeIO, err, "write PNG: %v", err)
		}
		if err := bw.Flush(); err != nil {
			return newErr(StageEncode, CodeIO, err, "write PNG: %v", err)
		}
		return nil
	default:
		return newErr(StageEncode, CodeInvalid, nil, "unknown output format %q", format)
	}
}
