package imageio

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// TestProbeSampleBytes: the probe tells the decoder's bytes per pixel (what
// the daemon's memory estimate needs) and whether a PNG is interlaced.
func TestProbeSampleBytes(t *testing.T) {
	enc := func(m image.Image) []byte {
		var b bytes.Buffer
		if err := png.Encode(&b, m); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	r := image.Rect(0, 0, 4, 3)
	opaque := image.NewRGBA(r)
	for i := 3; i < len(opaque.Pix); i += 4 {
		opaque.Pix[i] = 255
	}
	var jb bytes.Buffer
	jpeg.Encode(&jb, opaque, nil)
	cases := []struct {
		name string
		data []byte
		want int
	}{
		{"gray", enc(image.NewGray(r)), 1},
		{"gray16", enc(image.NewGray16(r)), 2},
		{"paletted", enc(image.NewPaletted(r, color.Palette{color.Black, color.White})), 1},
		{"rgb8", enc(opaque), 4},
		{"rgba16", enc(image.NewNRGBA64(r)), 8},
		{"jpeg", jb.Bytes(), 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := ProbeReader(bytes.NewReader(c.data), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if info.SampleBytes != c.want || info.Interlaced {
				t.Errorf("SampleBytes %d interlaced %v, want %d, false", info.SampleBytes, info.Interlaced, c.want)
			}
		})
	}
	// The same PNG with the IHDR interlace byte set (Adam7).
	data := enc(opaque)
	data[28] = 1
	binary.BigEndian.PutUint32(data[29:], crc32.ChecksumIEEE(data[12:29]))
	info, err := ProbeReader(bytes.NewReader(data), Limits{})
	if err != nil || !info.Interlaced {
		t.Errorf("interlaced PNG: %+v, %v", info, err)
	}
}
