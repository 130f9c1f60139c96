package imageio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	exif "github.com/dsoprea/go-exif/v3"

	"hidiffd/imageio/metatest"
)

var testProv = &Provenance{Software: "hidiffd", Version: "1.2.3-test", Model: "HI-Diff", ModelVersion: "0.1",
	Preset: "s", WeightsSHA256: strings.Repeat("ab", 32), Backend: "onnxruntime", Precision: "fp32",
	Seed: 7, Tile: "384x384", Overlap: 32}

// process is what the daemon does around the network: decode, then encode
// with the prepared metadata. It also returns today's output (no metadata)
// so the pixels can be compared.
func process(t *testing.T, in []byte, prov *Provenance, keep bool) (out, plain []byte, rep MetadataReport) {
	t.Helper()
	img, err := DecodeBytes(in, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	om := PrepareMetadata(img.Meta, img.Format, prov, keep)
	var b, p bytes.Buffer
	if err := Encode(&b, img, EncodeOptions{Meta: om}); err != nil {
		t.Fatal(err)
	}
	if err := Encode(&p, img, EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), p.Bytes(), om.Report
}

// samePixels checks that out is today's output plus metadata blocks: the
// image data after SOI (JPEG) or IHDR (PNG) is byte for byte the same, so
// the pixels are unchanged.
func samePixels(t *testing.T, out, plain []byte) {
	t.Helper()
	head := 2
	if bytes.HasPrefix(plain, []byte("\x89PNG")) {
		head = 33
	}
	if !bytes.Equal(out[:head], plain[:head]) || !bytes.HasSuffix(out, plain[head:]) {
		t.Errorf("output is not today's encoding plus metadata (%d vs %d bytes)", len(out), len(plain))
	}
	a, err1 := DecodeBytes(out, Limits{})
	b, err2 := DecodeBytes(plain, Limits{})
	if err1 != nil || err2 != nil {
		t.Fatalf("decode: %v %v", err1, err2)
	}
	if a.W != b.W || a.H != b.H || !slicesEqual(a.Pix, b.Pix) {
		t.Errorf("decoded pixels differ")
	}
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// flatEXIF reads the output's EXIF with go-exif (an independent reader):
// "IFD-path/TagName" -> formatted value.
func flatEXIF(t *testing.T, out []byte) map[string]string {
	t.Helper()
	m, err := ExtractMetadata(out)
	if err != nil || m.EXIF == nil {
		t.Fatalf("no EXIF in output (%v)", err)
	}
	tags, _, err := exif.GetFlatExifData(m.EXIF, nil)
	if err != nil {
		t.Fatalf("go-exif cannot read the output's EXIF: %v", err)
	}
	got := map[string]string{}
	for _, tg := range tags {
		got[tg.IfdPath+"/"+tg.TagName] = tg.Formatted
	}
	return got
}

// makerNoteText follows the test maker note's inner offset (counted from
// the start of the TIFF block, as Canon's are) to its text.
func makerNoteText(t []byte) (string, error) {
	var bo binary.ByteOrder = binary.BigEndian
	if string(t[:2]) == "II" {
		bo = binary.LittleEndian
	}
	entry := func(ifd uint32, tag uint16) (uint32, uint32, bool) {
		n := uint32(bo.Uint16(t[ifd:]))
		for k := uint32(0); k < n; k++ {
			p := ifd + 2 + 12*k
			if bo.Uint16(t[p:]) == tag {
				return bo.Uint32(t[p+4:]), bo.Uint32(t[p+8:]), true
			}
		}
		return 0, 0, false
	}
	_, exifIFD, ok := entry(bo.Uint32(t[4:]), metatest.TagExifIFD)
	if !ok {
		return "", fmt.Errorf("no Exif IFD")
	}
	_, mn, ok := entry(exifIFD, metatest.TagMakerNote)
	if !ok {
		return "", fmt.Errorf("no maker note")
	}
	cnt, off, ok := entry(mn, 0x0006)
	if !ok || int(off+cnt) > len(t) {
		return "", fmt.Errorf("maker note entry broken")
	}
	return strings.TrimRight(string(t[off:off+cnt]), "\x00"), nil
}

// exiftool runs exiftool's validator on a file when exiftool is installed
// (scripts/setup-deps.sh installs it) and returns its tags as "[Group] Tag"
// -> value; it fails the test on any warning or error.
func exiftool(t *testing.T, data []byte, ext string) map[string]string {
	t.Helper()
	return exiftoolAll(t, map[string][]byte{"f." + ext: data})["f."+ext]
}

// exiftoolAll is exiftool for many files in one run (it is slow to start).
func exiftoolAll(t *testing.T, files map[string][]byte) map[string]map[string]string {
	t.Helper()
	bin, err := exec.LookPath("exiftool")
	if err != nil {
		t.Log("exiftool not installed: skipping its validation")
		return nil
	}
	dir := t.TempDir()
	args := []string{"-a", "-u", "-G1", "-s", "-all", "-validate", "-warning"}
	byPath := map[string]string{}
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		args = append(args, p)
		byPath[p] = name
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("exiftool: %v\n%s", err, out)
	}
	res := map[string]map[string]string{}
	cur := ""
	if len(files) == 1 {
		for _, n := range byPath {
			cur = n
		}
		res[cur] = map[string]string{}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(l, "======== "); ok {
			cur = byPath[p]
			res[cur] = map[string]string{}
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || cur == "" {
			continue
		}
		res[cur][strings.Join(strings.Fields(k), " ")] = strings.TrimSpace(v)
	}
	for name, tags := range res {
		if tags["[ExifTool] Validate"] != "OK" {
			t.Errorf("exiftool -validate %s: %s, %s", name, tags["[ExifTool] Validate"], tags["[ExifTool] Warning"])
		}
	}
	if len(res) != len(files) {
		t.Errorf("exiftool read %d of %d files:\n%s", len(res), len(files), out)
	}
	return res
}

func cameraJPEG(bo binary.ByteOrder, o uint16, w, h int, extra ...[]byte) []byte {
	segs := append([][]byte{
		metatest.EXIFSegment(metatest.CameraEXIF(bo, o, w, h)),
		metatest.XMPSegment(metatest.XMP(int(o))),
	}, metatest.ICCSegments(metatest.DisplayP3(), 200)...)
	return metatest.JPEG(metatest.Picture(w, h), 90, append(segs, extra...)...)
}

func TestJPEGMetadataCarriedOver(t *testing.T) {
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(bo.String(), func(t *testing.T) {
			jfif := []byte("JFIF\x00\x01\x02\x01\x01\x2c\x01\x2c\x02\x01\xff\x00\x00\xff\x00\x00") // 300 dpi, 2x1 thumbnail
			ps := append([]byte("Photoshop 3.0\x00"), photoshopResources()...)
			in := cameraJPEG(bo, 1, 64, 48,
				metatest.Segment(0xFE, []byte("gate 4, camera 2")),
				metatest.Segment(0xED, ps),
				metatest.Segment(0xE2, []byte("MPF\x00preview index")),
				metatest.Segment(0xEE, []byte("Adobe\x00\x64\x00\x00\x00\x00\x01")))
			in = append(in[:2], append(metatest.Segment(0xE0, jfif), in[2:]...)...)
			out, plain, rep := process(t, in, testProv, true)
			samePixels(t, out, plain)

			got := flatEXIF(t, out)
			for k, want := range map[string]string{
				"IFD/Make": "TestCam", "IFD/Model": "TC-1", "IFD/DateTime": metatest.DateTime,
				"IFD/Exif/DateTimeOriginal": metatest.DateTime, "IFD/Exif/BodySerialNumber": metatest.Serial,
				"IFD/GPSInfo/GPSLatitudeRef": "N", "IFD/GPSInfo/GPSLatitude": "[48/1 51/1 2940/100]",
				"IFD/GPSInfo/GPSLongitude": "[2/1 17/1 4020/100]", "IFD/Orientation": "[1]",
				"IFD/Exif/Iop/InteroperabilityIndex": "R98",
			} {
				if got[k] != want {
					t.Errorf("EXIF %s = %q, want %q", k, got[k], want)
				}
			}
			if sw := got["IFD/Software"]; !strings.Contains(sw, "hidiffd 1.2.3-test") || !strings.Contains(sw, "HI-Diff s") ||
				!strings.Contains(sw, testProv.WeightsSHA256) || !strings.Contains(sw, "onnxruntime fp32") || !strings.Contains(sw, "seed 7") {
				t.Errorf("EXIF Software = %q", sw)
			}
			for k := range got {
				if strings.HasPrefix(k, "IFD1") {
					t.Errorf("thumbnail IFD left: %s", k)
				}
			}
			if bytes.Contains(out, metatest.Thumbnail()) {
				t.Error("the thumbnail's bytes are still in the output")
			}
			m, _ := ExtractMetadata(out)
			if txt, err := makerNoteText(m.EXIF); err != nil || txt != metatest.MakerNoteText {
				t.Errorf("maker note: %q, %v (its inner offset no longer resolves)", txt, err)
			}
			if !bytes.Equal(m.ICC, metatest.DisplayP3()) {
				t.Errorf("ICC profile differs (%d bytes, want %d)", len(m.ICC), len(metatest.DisplayP3()))
			}
			x := string(m.XMP)
			for _, want := range []string{"Gate 4 &amp; fence", "Camera Operator", `tiff:Orientation="1"`,
				"<hidiffd:Model>HI-Diff</hidiffd:Model>", "<hidiffd:Preset>s</hidiffd:Preset>",
				"<hidiffd:SourceSoftware>" + metatest.CameraSoftware + "</hidiffd:SourceSoftware>",
				"<hidiffd:SourceSHA256>" + mustSHA(in) + "</hidiffd:SourceSHA256>"} {
				if !strings.Contains(x, want) {
					t.Errorf("XMP lacks %q", want)
				}
			}
			if strings.Contains(x, "Thumbnails") {
				t.Error("XMP thumbnail kept")
			}
			if len(m.Comments) != 1 || string(m.Comments[0]) != "gate 4, camera 2" {
				t.Errorf("comments: %q", m.Comments)
			}
			if len(m.Photoshop) != 1 || bytes.Contains(m.Photoshop[0], []byte("THUMBDATA")) || !bytes.Contains(m.Photoshop[0], []byte("IPTC-CAPTION")) {
				t.Errorf("Photoshop segment: %q", m.Photoshop)
			}
			if m.JFIF == nil || m.JFIF[12] != 0 || m.JFIF[13] != 0 || m.JFIF[9] != 0x2c {
				t.Errorf("JFIF: % x", m.JFIF)
			}
			if bytes.Contains(out, []byte("MPF\x00")) || bytes.Contains(out, []byte("Adobe\x00")) {
				t.Error("MPF or Adobe segment carried")
			}
			if len(rep.Problems) != 0 || len(rep.Omitted) != 2 {
				t.Errorf("report: %+v", rep)
			}
			if et := exiftool(t, out, "jpg"); et != nil {
				for k, want := range map[string]string{"[IFD0] Make": "TestCam", "[GPS] GPSLatitude": `48 deg 51' 29.40"`,
					"[IFD0] Orientation": "Horizontal (normal)", "[ICC_Profile] ProfileDescription": "Display P3",
					"[XMP-hidiffd] Model": "HI-Diff", "[MakerUnknown] Unknown_0x0006": metatest.MakerNoteText} {
					if et[k] != want {
						t.Errorf("exiftool %s = %q, want %q", k, et[k], want)
					}
				}
			}
		})
	}
}

func mustSHA(b []byte) string {
	m, _ := ExtractMetadata(b)
	return m.SourceSHA256
}

// photoshopResources is an image-resource block with an IPTC record and a
// thumbnail resource (0x040C).
func photoshopResources() []byte {
	res := func(id uint16, data string) []byte {
		b := []byte("8BIM")
		b = binary.BigEndian.AppendUint16(b, id)
		b = append(b, 0, 0) // empty Pascal name, padded
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
		if len(data)%2 == 1 {
			b = append(b, 0)
		}
		return b
	}
	return append(res(0x0404, "\x1c\x02\x78\x00\x0cIPTC-CAPTION"), res(0x040C, "THUMBDATA")...)
}

// TestOrientationsOutputIsUpright: for each EXIF orientation the pixels are
// rotated at decode, so the output says 1 (EXIF and XMP), the EXIF pixel
// size is the output's, and the pixels are today's.
func TestOrientationsOutputIsUpright(t *testing.T) {
	const w, h = 40, 24
	outs := map[string][]byte{}
	for o := uint16(1); o <= 8; o++ {
		t.Run(fmt.Sprint(o), func(t *testing.T) {
			in := cameraJPEG(binary.BigEndian, o, w, h)
			out, plain, rep := process(t, in, testProv, true)
			samePixels(t, out, plain)
			img, _ := DecodeBytes(out, Limits{})
			ow, oh := w, h
			if o >= 5 {
				ow, oh = h, w
			}
			if img.W != ow || img.H != oh {
				t.Errorf("output %dx%d, want %dx%d", img.W, img.H, ow, oh)
			}
			got := flatEXIF(t, out)
			if got["IFD/Orientation"] != "[1]" || got["IFD/Exif/PixelXDimension"] != fmt.Sprintf("[%d]", ow) ||
				got["IFD/Exif/PixelYDimension"] != fmt.Sprintf("[%d]", oh) {
				t.Errorf("EXIF orientation %s, pixel size %s x %s", got["IFD/Orientation"], got["IFD/Exif/PixelXDimension"], got["IFD/Exif/PixelYDimension"])
			}
			if !strings.Contains(string(img.Meta.XMP), `tiff:Orientation="1"`) {
				t.Errorf("XMP orientation not 1")
			}
			if img.Meta.Applied != 1 {
				t.Errorf("re-decoding the output applies orientation %d", img.Meta.Applied)
			}
			changed := strings.Join(rep.Changed, "; ")
			if (o != 1) != strings.Contains(changed, fmt.Sprintf("Orientation %d -> 1", o)) {
				t.Errorf("report: %s", changed)
			}
			outs[fmt.Sprintf("o%d.jpg", o)] = out
		})
	}
	for name, tags := range exiftoolAll(t, outs) {
		if tags["[IFD0] Orientation"] != "Horizontal (normal)" || tags["[IFD1] ThumbnailImage"] != "" {
			t.Errorf("exiftool %s: orientation %q, thumbnail %q", name, tags["[IFD0] Orientation"], tags["[IFD1] ThumbnailImage"])
		}
	}
}

func TestPNGMetadataCarriedOver(t *testing.T) {
	for _, depth := range []int{8, 16} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			var pic image.Image = metatest.Picture(50, 30)
			if depth == 16 {
				p16 := image.NewRGBA64(pic.Bounds())
				for y := 0; y < 30; y++ {
					for x := 0; x < 50; x++ {
						p16.Set(x, y, pic.At(x, y))
					}
				}
				pic = p16
			}
			exifBlock := metatest.CameraEXIF(binary.BigEndian, 1, 50, 30)
			var ztxt []byte
			ztxt = append([]byte("Raw profile type exif\x00\x00"), deflate([]byte("\nexif\n  10\n4d4d002a00000008\n"))...)
			in := metatest.PNG(pic,
				metatest.Chunk("gAMA", []byte{0, 0, 0xB1, 0x8F}),
				metatest.ICCPChunk("Display P3", metatest.DisplayP3()),
				metatest.Chunk("pHYs", []byte{0, 0, 0x0B, 0x13, 0, 0, 0x0B, 0x13, 1}),
				metatest.EXIfChunk(exifBlock),
				metatest.TextChunk("Comment", "gate 4, camera 2"),
				metatest.TextChunk("Software", "TestCam PNG writer"),
				metatest.Chunk("zTXt", ztxt),
				metatest.Chunk("tIME", []byte{0x07, 0xEA, 12, 2, 10, 0, 0}),
				metatest.XMPChunk(metatest.XMP(1)))
			out, plain, rep := process(t, in, testProv, true)
			samePixels(t, out, plain)
			got := flatEXIF(t, out)
			for k, want := range map[string]string{"IFD/Make": "TestCam", "IFD/DateTime": metatest.DateTime,
				"IFD/GPSInfo/GPSLatitude": "[48/1 51/1 2940/100]", "IFD/Orientation": "[1]"} {
				if got[k] != want {
					t.Errorf("EXIF %s = %q, want %q", k, got[k], want)
				}
			}
			if !strings.Contains(got["IFD/Software"], "hidiffd 1.2.3-test") {
				t.Errorf("Software %q", got["IFD/Software"])
			}
			m, _ := ExtractMetadata(out)
			if !bytes.Equal(m.ICC, metatest.DisplayP3()) || m.ICCName != "Display P3" {
				t.Errorf("ICC: %d bytes named %q", len(m.ICC), m.ICCName)
			}
			var texts []string
			for _, c := range m.Chunks {
				texts = append(texts, c.Type+":"+strings.ReplaceAll(string(c.Data), "\x00", "="))
			}
			want := "gAMA:==\xb1\x8f|pHYs:==\v\x13==\v\x13\x01|tEXt:Comment=gate 4, camera 2|tEXt:Software=" + testProv.Text()
			if strings.Join(texts, "|") != want {
				t.Errorf("chunks:\n%q\nwant\n%q", strings.Join(texts, "|"), want)
			}
			if !strings.Contains(string(m.XMP), "<hidiffd:WeightsSHA256>"+testProv.WeightsSHA256) || !strings.Contains(string(m.XMP), "Camera Operator") {
				t.Errorf("XMP: %s", m.XMP)
			}
			if bytes.Contains(out, metatest.Thumbnail()) {
				t.Error("thumbnail bytes still in the output")
			}
			if len(rep.Problems) != 0 || len(rep.Omitted) != 2 {
				t.Errorf("report: %+v", rep)
			}
			if et := exiftool(t, out, "png"); et != nil {
				for k, want := range map[string]string{"[IFD0] Make": "TestCam", "[PNG] ProfileName": "Display P3",
					"[PNG] Comment": "gate 4, camera 2", "[ICC_Profile] ProfileDescription": "Display P3", "[IFD0] Orientation": "Horizontal (normal)"} {
					if et[k] != want {
						t.Errorf("exiftool %s = %q, want %q", k, et[k], want)
					}
				}
			}
		})
	}
}

// TestPNGOrientationNotApplied: hidiffd does not rotate PNG pixels, so an
// eXIf orientation stays as it was: the output displays as the input did.
func TestPNGOrientationNotApplied(t *testing.T) {
	in := metatest.PNG(metatest.Picture(20, 10), metatest.EXIfChunk(metatest.CameraEXIF(binary.LittleEndian, 6, 20, 10)))
	out, plain, _ := process(t, in, testProv, true)
	samePixels(t, out, plain)
	if got := flatEXIF(t, out); got["IFD/Orientation"] != "[6]" || got["IFD/Exif/PixelXDimension"] != "[20]" {
		t.Errorf("orientation %s, width %s", got["IFD/Orientation"], got["IFD/Exif/PixelXDimension"])
	}
}

func TestNoSourceMetadataGetsProvenance(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []byte
	}{{"jpeg", encJPEG(t, smooth(16, 8), 80)}, {"png", encPNG(t, pattern8(6, 4))}} {
		t.Run(c.name, func(t *testing.T) {
			out, plain, rep := process(t, c.in, testProv, true)
			samePixels(t, out, plain)
			got := flatEXIF(t, out)
			if got["IFD/Software"] != testProv.Text() || got["IFD/ResolutionUnit"] != "[2]" || len(got) != 5 {
				t.Errorf("EXIF: %v", got)
			}
			m, _ := ExtractMetadata(out)
			if checkXML(m.XMP) != nil || !strings.Contains(string(m.XMP), "<hidiffd:Seed>7</hidiffd:Seed>") {
				t.Errorf("XMP: %s", m.XMP)
			}
			if len(rep.Added) < 2 {
				t.Errorf("report: %+v", rep)
			}
			exiftool(t, out, map[bool]string{true: "png", false: "jpg"}[m.Format == FormatPNG])
		})
	}
}

func TestKeepMetadataOff(t *testing.T) {
	out, _, rep := process(t, cameraJPEG(binary.LittleEndian, 3, 16, 16), testProv, false)
	got := flatEXIF(t, out)
	if len(got) != 5 || got["IFD/Software"] == "" {
		t.Errorf("EXIF with keep off: %v", got)
	}
	m, _ := ExtractMetadata(out)
	if m.ICC != nil || strings.Contains(string(m.XMP), "Camera Operator") || bytes.Contains(out, []byte("TestCam")) {
		t.Error("source metadata written with keep off")
	}
	if len(rep.Omitted) != 1 {
		t.Errorf("report %+v", rep)
	}
}

// TestReprocessedOutput: an output fed back in keeps one set of hidiffd
// properties and one Software, and stays valid.
func TestReprocessedOutput(t *testing.T) {
	out1, _, _ := process(t, cameraJPEG(binary.LittleEndian, 6, 24, 16), testProv, true)
	p2 := *testProv
	p2.Seed = 8
	out2, plain, _ := process(t, out1, &p2, true)
	samePixels(t, out2, plain)
	m, _ := ExtractMetadata(out2)
	x := string(m.XMP)
	if strings.Count(x, "<hidiffd:Seed>") != 1 || !strings.Contains(x, "<hidiffd:Seed>8<") || !strings.Contains(x, "<hidiffd:SourceSoftware>"+testProv.Text()) {
		t.Errorf("XMP after a second pass:\n%s", x)
	}
	if got := flatEXIF(t, out2); got["IFD/Software"] != p2.Text() || got["IFD/Orientation"] != "[1]" || got["IFD/Make"] != "TestCam" {
		t.Errorf("EXIF after a second pass: %v", got)
	}
	if len(out2) > len(out1)+600 {
		t.Errorf("second pass grew the file from %d to %d bytes", len(out1), len(out2))
	}
	exiftool(t, out2, "jpg")
}

// TestInvalidOrientationBecomesOne: an Orientation outside 1..8 is decoded
// as 1 (no rotation), so the output says 1.
func TestInvalidOrientationBecomesOne(t *testing.T) {
	for _, o := range []uint16{0, 9, 300} {
		t.Run(fmt.Sprintf("orientation%d", o), func(t *testing.T) {
			in := metatest.JPEG(metatest.Picture(20, 10), 90, metatest.EXIFSegment(metatest.CameraEXIF(binary.BigEndian, o, 20, 10)))
			out, plain, rep := process(t, in, testProv, true)
			samePixels(t, out, plain)
			if got := flatEXIF(t, out); got["IFD/Orientation"] != "[1]" || got["IFD/Exif/PixelXDimension"] != "[20]" {
				t.Errorf("orientation %d: output %s, width %s (%q)", o, got["IFD/Orientation"], got["IFD/Exif/PixelXDimension"], rep.Changed)
			}
		})
	}
}
