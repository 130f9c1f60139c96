package imageio

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// pattern8 is an opaque RGBA test image whose pixels all differ, so any
// misplacement or channel swap shows.
func pattern8(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetRGBA(x, y, color.RGBA{uint8(x*7 + y*3), uint8(x*5 + y*11 + 1), uint8(x*y + 2), 0xFF})
		}
	}
	return m
}

func pattern16(w, h int) *image.RGBA64 {
	m := image.NewRGBA64(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetRGBA64(x, y, color.RGBA64{uint16(x*1031 + y*7), uint16(x*257 + y*4099 + 1), uint16(x*y*13 + 2), 0xFFFF})
		}
	}
	return m
}

// smooth is a low-frequency image that survives JPEG with small error.
func smooth(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetRGBA(x, y, color.RGBA{uint8(255 * x / w), uint8(255 * y / h), uint8(128 + 100*(x-y)/(w+h)), 0xFF})
		}
	}
	return m
}

func encPNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encJPEG(t testing.TB, m image.Image, q int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// exifAPP1 builds an APP1 segment (marker included) holding a TIFF IFD0 with
// an Orientation tag, in the given byte order, plus one unrelated tag before
// it so the reader has to walk the entries.
func exifAPP1(orient uint16, bo binary.ByteOrder) []byte {
	var t bytes.Buffer
	if bo == binary.LittleEndian {
		t.WriteString("II")
	} else {
		t.WriteString("MM")
	}
	put16 := func(v uint16) { var b [2]byte; bo.PutUint16(b[:], v); t.Write(b[:]) }
	put32 := func(v uint32) { var b [4]byte; bo.PutUint32(b[:], v); t.Write(b[:]) }
	put16(42)
	put32(8) // IFD0 right after the header
	put16(2) // two entries
	// 0x010F Make, ASCII, count 4, inline "Cam\0"
	put16(0x010F)
	put16(2)
	put32(4)
	t.WriteString("Cam\x00")
	// 0x0112 Orientation, SHORT, count 1, value left-justified
	put16(0x0112)
	put16(3)
	put32(1)
	put16(orient)
	put16(0)
	put32(0) // no next IFD
	body := append([]byte("Exif\x00\x00"), t.Bytes()...)
	seg := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(body)+2))
	return append(seg, body...)
}

// withSegment inserts a segment right after SOI.
func withSegment(jpg, seg []byte) []byte {
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func asErr(t testing.TB, err error) *Error {
	t.Helper()
	if err == nil {
		t.Fatal("expected an error, got nil")
	}
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %v (%T) is not *Error", err, err)
	}
	return e
}

func wantCode(t testing.TB, err error, stage, code string) {
	t.Helper()
	e := asErr(t, err)
	if e.Code != code || (stage != "" && e.Stage != stage) {
		t.Fatalf("got stage=%q code=%q reason=%q, want stage=%q code=%q", e.Stage, e.Code, e.Reason, stage, code)
	}
	if e.Reason == "" {
		t.Fatal("empty reason")
	}
}

// at returns the planar pixel (x, y) of an Image.
func at(m *Image, x, y int) [3]float32 {
	n := m.W * m.H
	i := y*m.W + x
	return [3]float32{m.Pix[i], m.Pix[n+i], m.Pix[2*n+i]}
}
