package imageio

import (
	"bufio"
	"bytes"
	"image"
	"image/jpeg"
	"image/png"
	"io"
)

// Image is a decoded frame in the layout the network wants: planar RGB
// (all R, then all G, then all B; each plane H rows of W), float32 in [0,1].
// W and H are after EXIF orientation. Format and BitDepth remember the source
// so Encode can write the result the same way; Meta is the source's metadata
// (nil for images not decoded from a file), for PrepareMetadata.
type Image struct {
	W, H     int
	Pix      []float32 // len 3*W*H
	Format   string    // FormatJPEG or FormatPNG
	BitDepth int       // 8 or 16 per channel
	Meta     *Metadata
	// Dropped says what of the file the result will not carry (alpha,
	// animation frames, a PNG's eXIf orientation), one sentence each.
	Dropped []string
}

// NewImage allocates a zeroed image.
func NewImage(w, h int, format string, bitDepth int) *Image {
	return &Image{W: w, H: h, Pix: make([]float32, 3*w*h), Format: format, BitDepth: bitDepth}
}

// Planes returns the R, G and B planes as sub-slices of Pix.
func (m *Image) Planes() (r, g, b []float32) {
	n := m.W * m.H
	return m.Pix[:n:n], m.Pix[n : 2*n : 2*n], m.Pix[2*n : 3*n : 3*n]
}

// DecodeFile decodes the JPEG or PNG at path. The file checks of Probe come
// first, then the header is read and the pixel limit applied, and only then is
// the file read whole and decoded, so neither an oversize header nor a huge
// file causes a large allocation.
func DecodeFile(path string, lim Limits) (*Image, error) {
	f, size, err := openRegular(path, lim, StageProbe)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := ProbeReader(bufio.NewReaderSize(f, 64<<10), lim); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, newErr(StageDecode, CodeIO, err, "seek: %v", err)
	}
	data, err := readBounded(f, size, lim.maxBytes())
	if err != nil {
		return nil, err
	}
	img, err := DecodeBytes(data, lim)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err == nil {
		img.Meta.ModTime = fi.ModTime()
	}
	return img, nil
}

// Decode reads r to the end (at most Limits.MaxBytes) and decodes it.
func Decode(r io.Reader, lim Limits) (*Image, error) {
	data, err := readBounded(r, 0, lim.maxBytes())
	if err != nil {
		return nil, err
	}
	return DecodeBytes(data, lim)
}

// readBounded reads all of r, refusing more than max bytes. sizeHint avoids
// regrowing the buffer when the size is known from fstat.
func readBounded(r io.Reader, sizeHint, max int64) ([]byte, error) {
	var buf bytes.Buffer
	if sizeHint > 0 && sizeHint <= max {
		buf.Grow(int(sizeHint) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, newErr(StageDecode, CodeIO, err, "read: %v", err)
	}
	if n > max {
		return nil, newErr(StageDecode, CodeFileTooLarge, nil, "file is over the limit of %d bytes", max)
	}
	return buf.Bytes(), nil
}

// DecodeBytes decodes a whole JPEG or PNG file held in memory.
func DecodeBytes(data []byte, lim Limits) (*Image, error) {
	info, err := ProbeReader(bytes.NewReader(data), lim)
	if err != nil {
		return nil, err
	}
	var src image.Image
	if info.Format == FormatJPEG {
		// EXIF is read from the whole file, not the probe's bounded capture.
		info.Orientation = jpegOrientation(data)
		src, err = jpeg.Decode(bytes.NewReader(data))
	} else {
		src, err = png.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, classifyDecodeErr(StageDecode, info.Format, err)
	}
	b := src.Bounds()
	if b.Dx() != info.Width || b.Dy() != info.Height {
		// Cannot happen with the standard decoders; guards the limit check.
		return nil, newErr(StageDecode, CodeCorrupt, nil, "decoded size %dx%d differs from header %dx%d",
			b.Dx(), b.Dy(), info.Width, info.Height)
	}
	img, depth := toPlanar(src, info.Orientation)
	img.Format = info.Format
	img.BitDepth = depth
	img.Dropped = dropped(data, info.Format, src)
	// The metadata walk cannot fail for a file that decoded: problems in
	// it are recorded in Meta and the part concerned is left out.
	if img.Meta, err = ExtractMetadata(data); err != nil {
		return nil, AsError(err, StageDecode)
	}
	img.Meta.Applied = info.Orientation
	return img, nil
}
