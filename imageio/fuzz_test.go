package imageio

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"testing"
)

// FuzzJPEGOrientation: the EXIF reader must never panic or return a value
// outside 1..8, whatever the bytes. Seeds are JPEG heads with valid and
// damaged EXIF segments. Run: go test ./imageio/ -run '^$' -fuzz FuzzJPEGOrientation -fuzztime 30s
func FuzzJPEGOrientation(f *testing.F) {
	base := encJPEG(f, smooth(8, 8), 80)
	for o := uint16(0); o <= 9; o++ {
		for _, bo := range []binary.ByteOrder{binary.BigEndian, binary.LittleEndian} {
			seg := exifAPP1(o, bo)
			f.Add(withSegment(base, seg))
			f.Add(withSegment(base[:2], seg[:len(seg)/2]))
			f.Add(seg[4:]) // bare "Exif\0\0" + TIFF
		}
	}
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x02})
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, data []byte) {
		if o := jpegOrientation(data); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
		if len(data) > 6 {
			if o := tiffOrientation(data[6:]); o < 0 || o > 8 {
				t.Fatalf("tiff orientation %d", o)
			}
		}
	})
}

// FuzzDecodeBytes: the whole decode path must return an image whose buffer
// matches its size, or an *Error; never panic. The pixel limit keeps a fuzzed
// header from asking for gigabytes.
func FuzzDecodeBytes(f *testing.F) {
	f.Add(encPNG(f, pattern8(5, 3)))
	f.Add(encPNG(f, pattern16(3, 5)))
	f.Add(encPNG(f, image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.NRGBA{1, 2, 3, 4}, color.Black})))
	f.Add(encJPEG(f, smooth(16, 8), 70))
	f.Add(withSegment(encJPEG(f, smooth(16, 8), 70), exifAPP1(6, binary.LittleEndian)))
	f.Add(pngHeader(100000, 100000))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := DecodeBytes(data, Limits{MaxPixels: 1 << 16})
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			return
		}
		if img.W <= 0 || img.H <= 0 || len(img.Pix) != 3*img.W*img.H {
			t.Fatalf("bad image %dx%d len %d", img.W, img.H, len(img.Pix))
		}
		var out bytes.Buffer
		if err := Encode(&out, img, EncodeOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}
