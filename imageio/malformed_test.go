package imageio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"hidiffd/imageio/metatest"
)

// tiffPos finds things in a CameraEXIF block so tests can damage them.
type tiffPos struct {
	t  []byte
	bo binary.ByteOrder
}

func (p tiffPos) ifd0() uint32 { return p.bo.Uint32(p.t[4:]) }

// entry is the position of tag's entry in the IFD at off.
func (p tiffPos) entry(off uint32, tag uint16) uint32 {
	n := uint32(p.bo.Uint16(p.t[off:]))
	for k := uint32(0); k < n; k++ {
		if q := off + 2 + 12*k; p.bo.Uint16(p.t[q:]) == tag {
			return q
		}
	}
	panic("no such tag")
}

func (p tiffPos) value(off uint32, tag uint16) uint32 { return p.bo.Uint32(p.t[p.entry(off, tag)+8:]) }

func (p tiffPos) exifIFD() uint32 { return p.value(p.ifd0(), metatest.TagExifIFD) }

func (p tiffPos) next0() uint32 {
	return p.ifd0() + 2 + 12*uint32(p.bo.Uint16(p.t[p.ifd0():]))
}

func (p tiffPos) put32(at, v uint32) { p.bo.PutUint32(p.t[at:], v) }

// TestMalformedEXIFNeverFailsAFrame damages a camera EXIF block in the ways
// crafted and broken files do. Every frame still comes out with today's
// pixels; exactly the damaged part is dropped, with one sentence saying
// what; what remains is valid EXIF (go-exif and exiftool read it).
func TestMalformedEXIFNeverFailsAFrame(t *testing.T) {
	cases := []struct {
		name   string
		damage func(p tiffPos) []byte
		report string            // in the one problem sentence
		has    map[string]string // go-exif tags that must remain
		gone   []string          // go-exif tags that must be gone
	}{
		{"value offset out of range", func(p tiffPos) []byte {
			p.put32(p.entry(p.ifd0(), metatest.TagMake)+8, 0xFFFFFF00)
			return p.t
		}, "IFD0 tag 0x010F: value at offset 4294967040", map[string]string{"IFD/Model": "TC-1", "IFD/GPSInfo/GPSLatitudeRef": "N"}, []string{"IFD/Make"}},
		{"count overflows", func(p tiffPos) []byte {
			q := p.entry(p.exifIFD(), 0x829A) // ExposureTime, RATIONAL
			p.put32(q+4, 0xFFFFFFFF)
			return p.t
		}, "Exif IFD tag 0x829A", map[string]string{"IFD/Exif/DateTimeOriginal": metatest.DateTime}, []string{"IFD/Exif/ExposureTime"}},
		{"Exif IFD out of range", func(p tiffPos) []byte {
			p.put32(p.entry(p.ifd0(), metatest.TagExifIFD)+8, 0x7FFFFFF0)
			return p.t
		}, "Exif IFD dropped: Exif IFD offset 2147483632 is outside", map[string]string{"IFD/Make": "TestCam", "IFD/GPSInfo/GPSLatitudeRef": "N"}, []string{"IFD/Exif/DateTimeOriginal"}},
		{"GPS IFD loops to IFD0", func(p tiffPos) []byte {
			p.put32(p.entry(p.ifd0(), metatest.TagGPSIFD)+8, p.ifd0())
			return p.t
		}, "GPS IFD dropped: GPS IFD points at offset 8, which is IFD0 already (an IFD loop)", map[string]string{"IFD/Make": "TestCam", "IFD/Exif/BodySerialNumber": metatest.Serial}, []string{"IFD/GPSInfo/GPSLatitudeRef"}},
		{"Interop IFD loops to Exif IFD", func(p tiffPos) []byte {
			p.put32(p.entry(p.exifIFD(), 0xA005)+8, p.exifIFD())
			return p.t
		}, "Interop IFD dropped", map[string]string{"IFD/Exif/BodySerialNumber": metatest.Serial}, []string{"IFD/Exif/Iop/InteroperabilityIndex"}},
		{"Exif IFD entry count runs past the end", func(p tiffPos) []byte {
			p.bo.PutUint16(p.t[p.exifIFD():], 0xFFFF)
			return p.t
		}, "65535 entries run past the end", map[string]string{"IFD/Make": "TestCam"}, []string{"IFD/Exif/DateTimeOriginal"}},
		{"IFD1 loops back to IFD0", func(p tiffPos) []byte {
			p.put32(p.next0(), p.ifd0())
			return p.t
		}, "", map[string]string{"IFD/Make": "TestCam", "IFD/Model": "TC-1", "IFD/Exif/DateTimeOriginal": metatest.DateTime}, nil},
		{"IFD1 out of range", func(p tiffPos) []byte {
			p.put32(p.next0(), 0xFFFFFFF0)
			return p.t
		}, "", map[string]string{"IFD/Make": "TestCam"}, nil},
		{"IFD0 out of range", func(p tiffPos) []byte {
			p.put32(4, uint32(len(p.t)+100))
			return p.t
		}, "EXIF dropped: IFD0 offset", nil, []string{"IFD/Make"}},
		{"truncated", func(p tiffPos) []byte { return p.t[:40] }, "EXIF dropped: IFD0 at offset 8: 11 entries run past the end of the 40-byte EXIF block", nil, []string{"IFD/Make"}},
		{"not TIFF", func(p tiffPos) []byte { return []byte("garbage, not a TIFF header") }, "EXIF dropped: no valid TIFF header", nil, []string{"IFD/Make"}},
	}
	outs := map[string][]byte{}
	for ci, c := range cases {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			t.Run(c.name+"/"+bo.String(), func(t *testing.T) {
				tiff := c.damage(tiffPos{metatest.CameraEXIF(bo, 6, 32, 16), bo})
				for _, format := range []string{FormatJPEG, FormatPNG} {
					var in []byte
					if format == FormatJPEG {
						in = metatest.JPEG(metatest.Picture(32, 16), 85, metatest.EXIFSegment(tiff))
					} else {
						in = metatest.PNG(metatest.Picture(32, 16), metatest.EXIfChunk(tiff))
					}
					out, plain, rep := process(t, in, testProv, true)
					samePixels(t, out, plain)
					if c.report == "" && len(rep.Problems) != 0 || c.report != "" && (len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], c.report)) {
						t.Errorf("%s problems: %q, want one with %q", format, rep.Problems, c.report)
					}
					got := flatEXIF(t, out)
					for k, v := range c.has {
						if got[k] != v {
							t.Errorf("%s: %s = %q, want %q", format, k, got[k], v)
						}
					}
					for _, k := range c.gone {
						if _, ok := got[k]; ok {
							t.Errorf("%s: %s still there", format, k)
						}
					}
					if !strings.Contains(got["IFD/Software"], "hidiffd") {
						t.Errorf("%s: no provenance: %v", format, got["IFD/Software"])
					}
					if bytes.Contains(out, metatest.Thumbnail()) {
						t.Errorf("%s: thumbnail bytes left", format)
					}
					outs[fmt.Sprintf("c%d-%s.%s", ci, bo, map[string]string{FormatJPEG: "jpg", FormatPNG: "png"}[format])] = out
				}
			})
		}
	}
	exiftoolAll(t, outs)
}

func TestMalformedICCAndXMPDropped(t *testing.T) {
	p3 := metatest.DisplayP3()
	segs := metatest.ICCSegments(p3, 200)
	badSize := append([]byte{}, p3...)
	binary.BigEndian.PutUint32(badSize, uint32(len(p3)+1))
	cases := []struct {
		name, report string
		in           []byte
	}{
		{"ICC chunk missing", "ICC profile chunk 2 of 3 is missing", metatest.JPEG(metatest.Picture(8, 8), 80, segs[0], segs[2])},
		{"ICC chunk twice", "ICC profile chunk 1 of 3 appears twice", metatest.JPEG(metatest.Picture(8, 8), 80, segs[0], segs[0], segs[1], segs[2])},
		{"ICC size wrong", "header says 481 bytes, the profile has 480", metatest.JPEG(metatest.Picture(8, 8), 80, metatest.ICCSegments(badSize, 1000)...)},
		{"PNG iCCP not zlib", "PNG iCCP chunk dropped: profile does not inflate", metatest.PNG(metatest.Picture(8, 8), metatest.Chunk("iCCP", []byte("P3\x00\x00not zlib")))},
		{"XMP not well-formed", "XMP dropped: not well-formed XML", metatest.JPEG(metatest.Picture(8, 8), 80, metatest.XMPSegment([]byte("<x:xmpmeta><rdf:RDF></x:xmpmeta>")))},
		{"XMP without RDF", "XMP dropped: no rdf:RDF element", metatest.PNG(metatest.Picture(8, 8), metatest.XMPChunk([]byte("<a>b</a>")))},
		{"PNG zTXt bomb", "PNG zTXt chunk at byte 33 dropped: text does not inflate: inflates to more than", metatest.PNG(metatest.Picture(8, 8),
			metatest.Chunk("zTXt", append([]byte("Comment\x00\x00"), deflate(make([]byte, maxInflatedMD+1))...)))},
		{"PNG tEXt without keyword", "PNG tEXt chunk at byte 33 dropped: keyword is not 1 to 79 bytes", metatest.PNG(metatest.Picture(8, 8), metatest.Chunk("tEXt", []byte("no keyword")))},
	}
	outs := map[string][]byte{}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, plain, rep := process(t, c.in, testProv, true)
			samePixels(t, out, plain)
			if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], c.report) {
				t.Errorf("problems %q, want one with %q", rep.Problems, c.report)
			}
			m, _ := ExtractMetadata(out)
			if m.ICC != nil || checkXML(m.XMP) != nil || !strings.Contains(string(m.XMP), "<hidiffd:Model>") {
				t.Errorf("output: ICC %d bytes, XMP %s", len(m.ICC), m.XMP)
			}
			outs[fmt.Sprintf("c%d.%s", ci, map[string]string{FormatJPEG: "jpg", FormatPNG: "png"}[m.Format])] = out
		})
	}
	exiftoolAll(t, outs)
}

// FuzzEditEXIF: whatever the bytes, the EXIF editor never panics, and what
// it returns reads again without a problem and without change.
func FuzzEditEXIF(f *testing.F) {
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		t := metatest.CameraEXIF(bo, 6, 8, 8)
		f.Add(t, uint8(6))
		f.Add(t[:len(t)/2], uint8(1))
		p := tiffPos{append([]byte{}, t...), bo}
		p.put32(p.entry(p.ifd0(), metatest.TagGPSIFD)+8, p.ifd0())
		f.Add(p.t, uint8(3))
	}
	f.Add([]byte("MM\x00*\x00\x00\x00\x08\x00\x01"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, applied uint8) {
		res, err := editEXIF(data, int(applied%9), "hidiffd test")
		if err != nil {
			return
		}
		again, err := editEXIF(res.tiff, 1, "hidiffd test")
		if err != nil || len(again.problems) != 0 {
			t.Fatalf("edited block does not read cleanly: %v %q", err, again.problems)
		}
		if !bytes.Equal(again.tiff, res.tiff) {
			t.Fatalf("second edit changed the block")
		}
	})
}

// FuzzExtractMetadata: container walking never panics on any bytes.
func FuzzExtractMetadata(f *testing.F) {
	f.Add(cameraJPEG(binary.LittleEndian, 6, 8, 8))
	f.Add(metatest.PNG(metatest.Picture(4, 4), metatest.ICCPChunk("x", metatest.DisplayP3()), metatest.TextChunk("a", "b")))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		m, err := ExtractMetadata(data)
		if err != nil {
			return
		}
		for _, format := range []string{FormatJPEG, FormatPNG} {
			_ = PrepareMetadata(m, format, testProv, true)
		}
	})
}
