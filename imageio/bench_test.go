package imageio

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"testing"
)

// camera720 is a 1280x720 frame with texture (not a flat ramp) so the JPEG
// has realistic entropy-coded size.
func camera720() *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, 1280, 720))
	s := uint32(1)
	for y := 0; y < 720; y++ {
		for x := 0; x < 1280; x++ {
			s = s*1664525 + 1013904223
			n := uint8(s >> 28)
			m.SetRGBA(x, y, color.RGBA{uint8(x/5) + n, uint8(y/3) + n, uint8((x+y)/8) + n, 0xFF})
		}
	}
	return m
}

// BenchmarkDecodeJPEG720p is the full path the daemon uses (probe, decode,
// convert to planar float32); BenchmarkStdlibJPEG720p is image/jpeg alone,
// so the difference is our conversion.
func BenchmarkDecodeJPEG720p(b *testing.B) {
	data := encJPEG(b, camera720(), 95)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeBytes(data, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStdlibJPEG720p(b *testing.B) {
	data := encJPEG(b, camera720(), 95)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePNG720p(b *testing.B) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, camera720()); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	for b.Loop() {
		if _, err := DecodeBytes(data, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeJPEG720p(b *testing.B) {
	img, err := DecodeBytes(encJPEG(b, camera720(), 95), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Encode(io.Discard, img, EncodeOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConvertYCbCr720p is the planar conversion alone.
func BenchmarkConvertYCbCr720p(b *testing.B) {
	m, err := jpeg.Decode(bytes.NewReader(encJPEG(b, camera720(), 95)))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		toPlanar(m, 1)
	}
}
