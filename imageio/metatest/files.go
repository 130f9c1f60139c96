package metatest

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"unicode/utf16"
)

// What CameraEXIF writes, for the tests to look for.
const (
	Make           = "TestCam"
	Model          = "TC-1"
	DateTime       = "2026:12:02 10:00:00"
	CameraSoftware = "TestCam firmware 1.0.4"
	Serial         = "SN-0042"
	MakerNoteText  = "TestCam internal 7"
)

// GPS of CameraEXIF: 48 deg 51' 29.40" N, 2 deg 17' 40.20" E, 35 m.
var (
	GPSLatitude  = []uint32{48, 1, 51, 1, 2940, 100}
	GPSLongitude = []uint32{2, 1, 17, 1, 4020, 100}
)

// Tags used below.
const (
	TagMake         = 0x010F
	TagModel        = 0x0110
	TagOrientation  = 0x0112
	TagSoftware     = 0x0131
	TagDateTime     = 0x0132
	TagExifIFD      = 0x8769
	TagGPSIFD       = 0x8825
	TagMakerNote    = 0x927C
	TagPixelX       = 0xA002
	TagPixelY       = 0xA003
	TagSerial       = 0xA431
	TagThumbOffset  = 0x0201
	TagThumbLength  = 0x0202
	TagGPSLatitude  = 0x0002
	TagGPSLongitude = 0x0004
)

// CameraEXIF is an EXIF block as a camera writes it: IFD0 (Make, Model,
// Orientation, resolution, Software, DateTime), the Exif IFD (exposure,
// DateTimeOriginal, pixel size w x h, serial number, a maker note and an
// Interop IFD), the GPS IFD, and IFD1 with a JPEG thumbnail. The maker note
// is an IFD whose text value is addressed from the start of the block, as
// Canon's is: moving the note without fixing it up breaks it.
func CameraEXIF(bo binary.ByteOrder, orientation uint16, w, h int) []byte {
	makerNote := func(at uint32) []byte {
		b := make([]byte, 2+2*12+4)
		bo.PutUint16(b, 2)
		text := append([]byte(MakerNoteText), 0)
		bo.PutUint16(b[2:], 0x0006)
		bo.PutUint16(b[4:], ASCII)
		bo.PutUint32(b[6:], uint32(len(text)))
		bo.PutUint32(b[10:], at+uint32(len(b)))
		bo.PutUint16(b[14:], 0x000C)
		bo.PutUint16(b[16:], Long)
		bo.PutUint32(b[18:], 1)
		bo.PutUint32(b[22:], 1234567)
		return append(b, text...)
	}
	mnLen := uint32(2 + 2*12 + 4 + len(MakerNoteText) + 1)
	ifd0 := &IFD{Entries: []Entry{
		Str(TagMake, Make),
		Str(TagModel, Model),
		Shorts(bo, TagOrientation, orientation),
		Rationals(bo, 0x011A, 72, 1),
		Rationals(bo, 0x011B, 72, 1),
		Shorts(bo, 0x0128, 2),
		Str(TagSoftware, CameraSoftware),
		Str(TagDateTime, DateTime),
		Shorts(bo, 0x0213, 1),
		{Tag: TagExifIFD, Sub: &IFD{Entries: []Entry{
			Rationals(bo, 0x829A, 1, 250),
			Rationals(bo, 0x829D, 28, 10),
			Bytes(0x9000, []byte("0232")),
			Str(0x9003, DateTime),
			Bytes(0x9101, []byte{1, 2, 3, 0}),
			{Tag: TagMakerNote, Type: Undefined, Count: mnLen, Make: makerNote},
			Bytes(0xA000, []byte("0100")),
			Shorts(bo, 0xA001, 1),
			Shorts(bo, TagPixelX, uint16(w)),
			Shorts(bo, TagPixelY, uint16(h)),
			{Tag: 0xA005, Sub: &IFD{Entries: []Entry{
				Str(0x0001, "R98"),
				Bytes(0x0002, []byte("0100")),
			}}},
			Str(TagSerial, Serial),
		}}},
		{Tag: TagGPSIFD, Sub: &IFD{Entries: []Entry{
			{Tag: 0x0000, Type: Byte, Count: 4, Value: []byte{2, 3, 0, 0}},
			Str(0x0001, "N"),
			Rationals(bo, TagGPSLatitude, GPSLatitude...),
			Str(0x0003, "E"),
			Rationals(bo, TagGPSLongitude, GPSLongitude...),
			{Tag: 0x0005, Type: Byte, Count: 1, Value: []byte{0}},
			Rationals(bo, 0x0006, 35, 1),
		}}},
	}}
	thumb := Thumbnail()
	ifd0.Next = &IFD{Entries: []Entry{
		Shorts(bo, 0x0103, 6),
		Rationals(bo, 0x011A, 72, 1),
		Rationals(bo, 0x011B, 72, 1),
		Shorts(bo, 0x0128, 2),
		{Tag: TagThumbOffset, Blob: thumb},
		Longs(bo, TagThumbLength, uint32(len(thumb))),
	}}
	return TIFF(bo, ifd0)
}

// Thumbnail is a 16x12 JPEG of solid red: a thumbnail left in an output
// would show a different picture from the output.
func Thumbnail() []byte {
	m := image.NewRGBA(image.Rect(0, 0, 16, 12))
	for i := 0; i < len(m.Pix); i += 4 {
		m.Pix[i], m.Pix[i+3] = 255, 255
	}
	var b bytes.Buffer
	jpeg.Encode(&b, m, &jpeg.Options{Quality: 50})
	return b.Bytes()
}

// DisplayP3 is an ICC v4 display profile with Display P3 primaries, D65
// white and the sRGB tone curve: header, tag table, desc (mluc), cprt,
// wtpt, rXYZ/gXYZ/bXYZ (D50-adapted) and one shared para curve. Its
// description is "Display P3".
func DisplayP3() []byte {
	s15 := func(v float64) uint32 { return uint32(int32(v * 65536)) }
	xyz := func(x, y, z float64) []byte {
		b := make([]byte, 20)
		copy(b, "XYZ ")
		binary.BigEndian.PutUint32(b[8:], s15(x))
		binary.BigEndian.PutUint32(b[12:], s15(y))
		binary.BigEndian.PutUint32(b[16:], s15(z))
		return b
	}
	mluc := func(s string) []byte {
		u := utf16.Encode([]rune(s))
		b := make([]byte, 28+2*len(u))
		copy(b, "mluc")
		binary.BigEndian.PutUint32(b[8:], 1)
		binary.BigEndian.PutUint32(b[12:], 12)
		copy(b[16:], "enUS")
		binary.BigEndian.PutUint32(b[20:], uint32(2*len(u)))
		binary.BigEndian.PutUint32(b[24:], 28)
		for i, c := range u {
			binary.BigEndian.PutUint16(b[28+2*i:], c)
		}
		return b
	}
	para := make([]byte, 12+5*4)
	copy(para, "para")
	binary.BigEndian.PutUint16(para[8:], 3)
	for i, v := range []float64{2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045} {
		binary.BigEndian.PutUint32(para[12+4*i:], s15(v))
	}
	type tag struct {
		sig  string
		data []byte
	}
	tags := []tag{
		{"desc", mluc("Display P3")},
		{"cprt", mluc("No copyright, test profile")},
		{"wtpt", xyz(0.9642, 1.0, 0.8249)},
		{"rXYZ", xyz(0.5151, 0.2412, -0.0011)},
		{"gXYZ", xyz(0.2920, 0.6922, 0.0419)},
		{"bXYZ", xyz(0.1571, 0.0666, 0.7841)},
		{"rTRC", para}, {"gTRC", para}, {"bTRC", para},
	}
	head := make([]byte, 128)
	table := make([]byte, 4+12*len(tags))
	binary.BigEndian.PutUint32(table, uint32(len(tags)))
	var data []byte
	offs := map[string]int{}
	for i, t := range tags {
		off := 128 + len(table) + len(data)
		if t.sig == "gTRC" || t.sig == "bTRC" { // shared with rTRC, as real profiles do
			off = offs["rTRC"]
		} else {
			offs[t.sig] = off
			data = append(data, t.data...)
			for len(data)%4 != 0 {
				data = append(data, 0)
			}
		}
		e := table[4+12*i:]
		copy(e, t.sig)
		binary.BigEndian.PutUint32(e[4:], uint32(off))
		binary.BigEndian.PutUint32(e[8:], uint32(len(t.data)))
	}
	size := 128 + len(table) + len(data)
	binary.BigEndian.PutUint32(head, uint32(size))
	copy(head[4:], "test")
	binary.BigEndian.PutUint32(head[8:], 0x04400000) // 4.4
	copy(head[12:], "mntr")
	copy(head[16:], "RGB ")
	copy(head[20:], "XYZ ")
	binary.BigEndian.PutUint16(head[24:], 2026)
	binary.BigEndian.PutUint16(head[26:], 12)
	binary.BigEndian.PutUint16(head[28:], 2)
	copy(head[36:], "acsp")
	copy(head[40:], "APPL")
	binary.BigEndian.PutUint32(head[68:], s15(0.9642))
	binary.BigEndian.PutUint32(head[72:], s15(1.0))
	binary.BigEndian.PutUint32(head[76:], s15(0.8249))
	copy(head[80:], "test")
	return append(append(head, table...), data...)
}

// XMP is an XMP packet with a creator, a title, tiff:Orientation (as an
// attribute) and a Lightroom-style xmp:Thumbnails preview.
func XMP(orientation int) []byte {
	return []byte(fmt.Sprintf(`<?xpacket begin="`+"\ufeff"+`" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="TestCam XMP 1.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:tiff="http://ns.adobe.com/tiff/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/"
    tiff:Orientation="%d"
    xmp:CreateDate="2026-12-02T10:00:00">
   <dc:creator><rdf:Seq><rdf:li>Camera Operator</rdf:li></rdf:Seq></dc:creator>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Gate 4 &amp; fence</rdf:li></rdf:Alt></dc:title>
   <xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType="Resource">
    <xmpGImg:format>JPEG</xmpGImg:format><xmpGImg:image>/9j/4AAQSkZJRgABAQ</xmpGImg:image>
   </rdf:li></rdf:Alt></xmp:Thumbnails>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
%s
<?xpacket end="w"?>`, orientation, bytes.Repeat([]byte(" "), 200)))
}

// Segment is a JPEG marker segment: FF, marker, length, body.
func Segment(marker byte, body []byte) []byte {
	s := []byte{0xFF, marker, 0, 0}
	binary.BigEndian.PutUint16(s[2:], uint16(len(body)+2))
	return append(s, body...)
}

// EXIFSegment, XMPSegment and ICCSegments are the APP1/APP2 segments that
// carry each kind in a JPEG (the profile in chunks of at most per bytes).
func EXIFSegment(tiff []byte) []byte { return Segment(0xE1, append([]byte("Exif\x00\x00"), tiff...)) }

func XMPSegment(x []byte) []byte {
	return Segment(0xE1, append([]byte("http://ns.adobe.com/xap/1.0/\x00"), x...))
}

func ICCSegments(p []byte, per int) [][]byte {
	n := (len(p) + per - 1) / per
	var segs [][]byte
	for k := 0; k < n; k++ {
		body := append([]byte("ICC_PROFILE\x00"), byte(k+1), byte(n))
		body = append(body, p[k*per:min(len(p), (k+1)*per)]...)
		segs = append(segs, Segment(0xE2, body))
	}
	return segs
}

// JPEG encodes m and puts segs right after SOI, in order.
func JPEG(m image.Image, quality int, segs ...[]byte) []byte {
	var b bytes.Buffer
	jpeg.Encode(&b, m, &jpeg.Options{Quality: quality})
	out := append([]byte{}, b.Bytes()[:2]...)
	for _, s := range segs {
		out = append(out, s...)
	}
	return append(out, b.Bytes()[2:]...)
}

// Chunk is a PNG chunk: length, type, data, CRC.
func Chunk(typ string, data []byte) []byte {
	c := make([]byte, 8, 12+len(data))
	binary.BigEndian.PutUint32(c, uint32(len(data)))
	copy(c[4:], typ)
	c = append(c, data...)
	return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
}

// ICCPChunk, EXIfChunk, TextChunk and XMPChunk make PNG metadata chunks.
func ICCPChunk(name string, p []byte) []byte {
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(p)
	zw.Close()
	return Chunk("iCCP", append(append([]byte(name), 0, 0), z.Bytes()...))
}

func EXIfChunk(tiff []byte) []byte { return Chunk("eXIf", tiff) }

func TextChunk(key, text string) []byte { return Chunk("tEXt", []byte(key+"\x00"+text)) }

func XMPChunk(x []byte) []byte {
	return Chunk("iTXt", append([]byte("XML:com.adobe.xmp\x00\x00\x00\x00\x00"), x...))
}

// PNG encodes m and puts chunks right after IHDR, in order.
func PNG(m image.Image, chunks ...[]byte) []byte {
	var b bytes.Buffer
	png.Encode(&b, m)
	const ihdrEnd = 8 + 12 + 13
	out := append([]byte{}, b.Bytes()[:ihdrEnd]...)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return append(out, b.Bytes()[ihdrEnd:]...)
}

// ZeroPNG is a w x h RGB PNG of the given bit depth (8 or 16) whose pixels
// are all zero, compressed as well as zlib can: tiny on disk (a few hundred
// KB for 7000x7000), large once decoded, for memory tests.
func ZeroPNG(w, h, depth int) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = byte(depth), 2 // truecolour
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+3*(depth/8)*w) // filter byte 0, then zeros
	for y := 0; y < h; y++ {
		zw.Write(row)
	}
	zw.Close()
	return PNGChunks(Chunk("IHDR", ihdr), Chunk("IDAT", z.Bytes()), Chunk("IEND", nil))
}

// PNGChunks is the PNG signature followed by chunks (made by Chunk), as
// they are: for files no encoder would write.
func PNGChunks(chunks ...[]byte) []byte {
	out := []byte("\x89PNG\r\n\x1a\n")
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

// Picture is a w x h test image with a different colour in each pixel
// and a mark in the top-left corner, so rotations and mirrors show.
func Picture(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{uint8(255 * x / w), uint8(255 * y / h), uint8(128 + 60*(x-y)/(w+h)), 255}
			if x < w/4 && y < h/4 {
				c = color.RGBA{250, 250, 250, 255}
			}
			m.SetRGBA(x, y, c)
		}
	}
	return m
}
