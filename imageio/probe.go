// Package imageio turns camera files into planar float32 RGB and back. It
// decodes JPEG and PNG only, honours EXIF orientation for JPEG, carries a
// file's metadata (EXIF, XMP, ICC, text) into the output with the
// provenance of the run (metadata.go, metawrite.go), and refuses bad
// input (symlinks, special files, empty files, oversize headers, truncated
// data) with an *Error that names the stage and a human reason, so the daemon
// can move the frame to failed/ and go on.
package imageio

import (
	"bufio"
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Formats this package reads and writes.
const (
	FormatJPEG = "jpeg"
	FormatPNG  = "png"
)

// Defaults used when a Limits field is zero. 40 MP covers 8K UHD (33 MP);
// 256 MiB covers a 40 MP 16-bit PNG stored uncompressed.
const (
	DefaultMaxPixels = 40_000_000
	DefaultMaxBytes  = 256 << 20
)

// Limits bound the work one file can cause. Both are checked before any pixel
// buffer is allocated: MaxBytes from the file size, MaxPixels from the header.
type Limits struct {
	MaxPixels int64 // width*height; <= 0 means DefaultMaxPixels
	MaxBytes  int64 // file size; <= 0 means DefaultMaxBytes
}

func (l Limits) maxPixels() int64 {
	if l.MaxPixels <= 0 {
		return DefaultMaxPixels
	}
	return l.MaxPixels
}

func (l Limits) maxBytes() int64 {
	if l.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return l.MaxBytes
}

// Info is what the header says, before any pixels are decoded.
type Info struct {
	Format      string // FormatJPEG or FormatPNG
	Width       int    // as stored, before EXIF orientation
	Height      int    // as stored, before EXIF orientation
	BitDepth    int    // 8 or 16 (per channel)
	Orientation int    // EXIF orientation 1..8; 1 for PNG or when absent
	Size        int64  // file size in bytes; 0 when probing a stream
	// SampleBytes is the size of one pixel in the decoder's own image (the
	// standard library's, before conversion to float32): 1 gray or
	// paletted, 2 gray16, 3 JPEG YCbCr (at most), 4 RGBA or CMYK, 8 RGBA64.
	SampleBytes int
	// Interlaced: an Adam7 PNG, which the decoder assembles from a second
	// image of the same size.
	Interlaced bool
}

// Pixels is Width*Height without overflow on 32-bit platforms.
func (i Info) Pixels() int64 { return int64(i.Width) * int64(i.Height) }

// DisplaySize is the size after EXIF orientation: orientations 5..8 swap
// width and height.
func (i Info) DisplaySize() (w, h int) {
	if i.Orientation >= 5 && i.Orientation <= 8 {
		return i.Height, i.Width
	}
	return i.Width, i.Height
}

// Probe reads only the header of the file at path. It refuses symlinks and
// special files without opening them, empty files, files over
// Limits.MaxBytes, and images whose header claims more than
// Limits.MaxPixels.
func Probe(path string, lim Limits) (Info, error) {
	f, size, err := openRegular(path, lim, StageProbe)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	info, err := ProbeReader(bufio.NewReaderSize(f, 64<<10), lim)
	info.Size = size
	return info, err
}

// exifCapture bounds how many header bytes ProbeReader keeps to look for the
// EXIF orientation: an APP1 segment is at most 64 KiB and comes before SOF.
const exifCapture = 128 << 10

// ProbeReader is Probe for a stream: it consumes only as much of r as the
// header needs. File-level checks (symlink, special file, size) are the
// caller's; an empty stream is still refused as CodeEmpty.
func ProbeReader(r io.Reader, lim Limits) (Info, error) {
	var head [16]byte
	n, err := io.ReadFull(r, head[:])
	switch {
	case n == 0 && (err == io.EOF || err == nil):
		return Info{}, newErr(StageProbe, CodeEmpty, nil, "empty file (zero bytes)")
	case err != nil && err != io.ErrUnexpectedEOF:
		return Info{}, newErr(StageProbe, CodeIO, err, "read header: %v", err)
	}
	format, err := sniff(head[:n])
	if err != nil {
		return Info{}, err
	}
	// Keep what the header decoder consumes so the EXIF APP1 segment (which
	// precedes SOF) can be parsed without a second read.
	capt := &capture{max: exifCapture}
	capt.buf.Write(head[:n])
	mr := io.MultiReader(bytes.NewReader(head[:n]), io.TeeReader(r, capt))
	info, err := decodeConfig(mr, format, StageProbe, lim)
	if err != nil {
		return info, err
	}
	if format == FormatJPEG {
		info.Orientation = jpegOrientation(capt.buf.Bytes())
	} else if b := capt.buf.Bytes(); len(b) > 28 && string(b[12:16]) == "IHDR" {
		info.Interlaced = b[28] == 1
	}
	return info, nil
}

// capture is a bounded io.Writer for io.TeeReader.
type capture struct {
	buf bytes.Buffer
	max int
}

func (c *capture) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

// sniff names the format from the magic bytes. We dispatch on the magic
// ourselves instead of image.DecodeConfig so that a format some other package
// registers (gif, webp, ...) is still refused here: only JPEG and PNG have an
// encoder for the output and are tested.
func sniff(head []byte) (string, error) {
	switch {
	case bytes.HasPrefix(head, []byte("\xff\xd8\xff")):
		return FormatJPEG, nil
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return FormatPNG, nil
	}
	known := []struct{ magic, name string }{
		{"GIF87a", "GIF"}, {"GIF89a", "GIF"}, {"BM", "BMP"},
		{"II*\x00", "TIFF"}, {"MM\x00*", "TIFF"}, {"\x00\x00\x00\x0cjP  ", "JPEG 2000"},
		{"\xff\x0a", "JPEG XL"}, {"\x00\x00\x00\x0cJXL ", "JPEG XL"},
	}
	for _, k := range known {
		if bytes.HasPrefix(head, []byte(k.magic)) {
			return "", newErr(StageProbe, CodeUnsupported, nil, "unsupported image format %s (only JPEG and PNG)", k.name)
		}
	}
	if len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WEBP" {
		return "", newErr(StageProbe, CodeUnsupported, nil, "unsupported image format WebP (only JPEG and PNG)")
	}
	if len(head) >= 12 && string(head[4:8]) == "ftyp" {
		return "", newErr(StageProbe, CodeUnsupported, nil, "unsupported image format HEIF/AVIF/ISO-BMFF (only JPEG and PNG)")
	}
	return "", newErr(StageProbe, CodeNotImage, nil, "not an image: unrecognised header % x", head[:min(len(head), 8)])
}

// decodeConfig parses the header and applies the pixel limit.
func decodeConfig(r io.Reader, format, stage string, lim Limits) (Info, error) {
	var cfg image.Config
	var err error
	if format == FormatJPEG {
		cfg, err = jpeg.DecodeConfig(r)
	} else {
		cfg, err = png.DecodeConfig(r)
	}
	if err != nil {
		return Info{}, classifyDecodeErr(stage, format, err)
	}
	info := Info{Format: format, Width: cfg.Width, Height: cfg.Height, BitDepth: 8, Orientation: 1, SampleBytes: 8}
	switch cfg.ColorModel {
	case color.Gray16Model, color.RGBA64Model, color.NRGBA64Model:
		info.BitDepth = 16
	}
	switch cfg.ColorModel {
	case color.GrayModel:
		info.SampleBytes = 1
	case color.Gray16Model:
		info.SampleBytes = 2
	case color.YCbCrModel:
		info.SampleBytes = 3
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		info.SampleBytes = 4
	default:
		if _, ok := cfg.ColorModel.(color.Palette); ok {
			info.SampleBytes = 1
		}
	}
	if info.Width <= 0 || info.Height <= 0 {
		return info, newErr(stage, CodeCorrupt, nil, "%s header has empty size %dx%d", format, info.Width, info.Height)
	}
	if p := info.Pixels(); p > lim.maxPixels() {
		return info, newErr(stage, CodeTooLarge, nil, "image is %dx%d (%d pixels), over the limit of %d pixels",
			info.Width, info.Height, p, lim.maxPixels())
	}
	return info, nil
}

// openRegular opens path for reading only if it is a non-empty regular file
// within the byte limit. It Lstats first so that symlinks, fifos and devices
// are refused without being opened (opening a fifo blocks; opening a device
// can have side effects), then opens with O_NOFOLLOW|O_NONBLOCK and checks
// with fstat that it got the same regular file, which closes the race where
// the name is swapped between the two calls.
func openRegular(path string, lim Limits, stage string) (*os.File, int64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, 0, statErr(stage, err)
	}
	if err := checkMode(stage, fi, lim); err != nil {
		return nil, 0, err
	}
	f, err := openNoFollow(path)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, 0, newErr(stage, CodeSymlink, err, "refusing symlink")
		}
		return nil, 0, statErr(stage, err)
	}
	fi2, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, newErr(stage, CodeIO, err, "fstat: %v", err)
	}
	if !os.SameFile(fi, fi2) {
		f.Close()
		return nil, 0, newErr(stage, CodeIO, nil, "file was replaced while opening")
	}
	if err := checkMode(stage, fi2, lim); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi2.Size(), nil
}

func statErr(stage string, err error) *Error {
	if errors.Is(err, fs.ErrNotExist) {
		return newErr(stage, CodeNotFound, err, "file not found")
	}
	if errors.Is(err, fs.ErrPermission) {
		return newErr(stage, CodeIO, err, "permission denied")
	}
	return newErr(stage, CodeIO, err, "%v", err)
}

func checkMode(stage string, fi fs.FileInfo, lim Limits) *Error {
	m := fi.Mode()
	switch {
	case m&fs.ModeSymlink != 0:
		return newErr(stage, CodeSymlink, nil, "refusing symlink")
	case m.IsDir():
		return newErr(stage, CodeNotRegular, nil, "not a regular file: directory")
	case m&fs.ModeNamedPipe != 0:
		return newErr(stage, CodeNotRegular, nil, "not a regular file: fifo")
	case m&fs.ModeSocket != 0:
		return newErr(stage, CodeNotRegular, nil, "not a regular file: socket")
	case m&fs.ModeDevice != 0:
		return newErr(stage, CodeNotRegular, nil, "not a regular file: device")
	case !m.IsRegular():
		return newErr(stage, CodeNotRegular, nil, "not a regular file: mode %v", m)
	case fi.Size() == 0:
		return newErr(stage, CodeEmpty, nil, "empty file (zero bytes)")
	case fi.Size() > lim.maxBytes():
		return newErr(stage, CodeFileTooLarge, nil, "file is %d bytes, over the limit of %d", fi.Size(), lim.maxBytes())
	}
	return nil
}
