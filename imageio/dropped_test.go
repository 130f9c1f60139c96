package imageio

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
)

// insertChunk puts a chunk right after IHDR (offset 33) of a PNG.
func insertChunk(data []byte, typ string, body []byte) []byte {
	var c bytes.Buffer
	binary.Write(&c, binary.BigEndian, uint32(len(body)))
	c.WriteString(typ)
	c.Write(body)
	binary.Write(&c, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), body...)))
	out := append([]byte(nil), data[:33]...)
	out = append(out, c.Bytes()...)
	return append(out, data[33:]...)
}

// TestDecodeSaysWhatIsDropped: alpha, APNG frames and a PNG's eXIf
// orientation are reported on the decoded image (the daemon logs them).
func TestDecodeSaysWhatIsDropped(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 4, 4))
	for i := range m.Pix {
		m.Pix[i] = 0xff
	}
	var plain bytes.Buffer
	png.Encode(&plain, m)
	img, err := DecodeBytes(plain.Bytes(), Limits{})
	if err != nil || len(img.Dropped) != 0 {
		t.Fatalf("opaque PNG: %v %v", img.Dropped, err)
	}

	m.SetNRGBA(1, 1, color.NRGBA{1, 2, 3, 0})
	m.SetNRGBA(2, 2, color.NRGBA{1, 2, 3, 128})
	var alpha bytes.Buffer
	png.Encode(&alpha, m)
	data := alpha.Bytes()
	actl := binary.BigEndian.AppendUint32(nil, 5) // 5 frames
	actl = binary.BigEndian.AppendUint32(actl, 0)
	data = insertChunk(data, "acTL", actl)
	exif := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00")
	data = insertChunk(data, "eXIf", exif)
	img, err = DecodeBytes(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(img.Dropped, " | ")
	for _, want := range []string{"alpha channel: 2 pixels", "animated PNG: 5 frames", "eXIf orientation 6"} {
		if !strings.Contains(got, want) {
			t.Errorf("Dropped = %q, lacks %q", got, want)
		}
	}
}
