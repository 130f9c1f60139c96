package imageio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// checkAgainst compares a decoded Image with the straight (alpha-dropped)
// colour of every pixel of ref, exactly.
func checkAgainst(t *testing.T, got *Image, ref image.Image) {
	t.Helper()
	b := ref.Bounds()
	if got.W != b.Dx() || got.H != b.Dy() || len(got.Pix) != 3*got.W*got.H {
		t.Fatalf("size %dx%d len %d, want %dx%d", got.W, got.H, len(got.Pix), b.Dx(), b.Dy())
	}
	for y := 0; y < got.H; y++ {
		for x := 0; x < got.W; x++ {
			want := straight(ref.At(x, y))
			if g := at(got, x, y); g != want {
				t.Fatalf("pixel (%d,%d) = %v, want %v", x, y, g, want)
			}
		}
	}
}

// straight is the reference colour of one pixel with alpha dropped: straight
// colours are taken as stored, YCbCr goes through the 8-bit JFIF conversion
// (what libjpeg/PIL give), anything else through the 16-bit colour model.
func straight(c color.Color) [3]float32 {
	switch c := c.(type) {
	case color.NRGBA:
		return [3]float32{float32(c.R) / 255, float32(c.G) / 255, float32(c.B) / 255}
	case color.NRGBA64:
		return [3]float32{float32(c.R) / 65535, float32(c.G) / 65535, float32(c.B) / 65535}
	case color.YCbCr:
		r, g, b := color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
		return [3]float32{float32(r) / 255, float32(g) / 255, float32(b) / 255}
	}
	n := color.NRGBA64Model.Convert(c).(color.NRGBA64)
	return [3]float32{float32(n.R) / 65535, float32(n.G) / 65535, float32(n.B) / 65535}
}

func TestPNGRoundTrip(t *testing.T) {
	nrgba := image.NewNRGBA(image.Rect(0, 0, 9, 5))
	nrgba64 := image.NewNRGBA64(image.Rect(0, 0, 9, 5))
	gray := image.NewGray(image.Rect(0, 0, 9, 5))
	gray16 := image.NewGray16(image.Rect(0, 0, 9, 5))
	pal := image.NewPaletted(image.Rect(0, 0, 9, 5), color.Palette{
		color.NRGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 0}, color.NRGBA{1, 2, 3, 128}})
	for i := range nrgba.Pix {
		nrgba.Pix[i] = uint8(i * 37)
		nrgba64.Pix[2*i] = uint8(i * 41)
		nrgba64.Pix[2*i+1] = uint8(i * 13)
	}
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 29)
		gray16.Pix[2*i], gray16.Pix[2*i+1] = uint8(i*17), uint8(i*91)
		pal.Pix[i] = uint8(i % 3)
	}
	cases := []struct {
		name  string
		img   image.Image
		depth int
		want  image.Image // straight colour reference; nil = img
	}{
		{"rgb8", pattern8(37, 23), 8, nil},
		{"rgb16", pattern16(37, 23), 16, nil},
		{"rgba8-alpha-dropped", nrgba, 8, nil},
		{"rgba16-alpha-dropped", nrgba64, 16, nil},
		{"gray8", gray, 8, nil},
		{"gray16", gray16, 16, nil},
		{"paletted-with-transparency", pal, 8, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, "in.png", encPNG(t, c.img))
			info, err := Probe(p, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != FormatPNG || info.BitDepth != c.depth || info.Width != 9 && info.Width != 37 {
				t.Fatalf("probe %+v", info)
			}
			got, err := DecodeFile(p, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Format != FormatPNG || got.BitDepth != c.depth {
				t.Fatalf("format %s depth %d, want png %d", got.Format, got.BitDepth, c.depth)
			}
			checkAgainst(t, got, c.img)

			// Encode keeps format and bit depth, and decoding the output gives
			// the same floats back (the quantiser inverts the decoder exactly).
			var out bytes.Buffer
			if err := Encode(&out, got, EncodeOptions{}); err != nil {
				t.Fatal(err)
			}
			cfg, err := png.DecodeConfig(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			wantModel := color.Model(color.RGBAModel)
			if c.depth == 16 {
				wantModel = color.RGBA64Model
			}
			if cfg.ColorModel != wantModel {
				t.Fatalf("output colour model %v, want %v", cfg.ColorModel, wantModel)
			}
			again, err := DecodeBytes(out.Bytes(), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if again.BitDepth != c.depth || !slices.Equal(again.Pix, got.Pix) {
				t.Fatal("PNG encode/decode round trip changed pixels")
			}
		})
	}
}

func TestJPEGDecodeMatchesStdlib(t *testing.T) {
	for _, c := range []struct {
		name string
		src  image.Image
	}{{"pattern8", pattern8(41, 27)}, {"smooth", smooth(64, 48)}, {"gray", image.NewGray(image.Rect(0, 0, 17, 9))}} {
		t.Run(c.name, func(t *testing.T) {
			data := encJPEG(t, c.src, 90)
			ref, err := jpeg.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeBytes(data, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Format != FormatJPEG || got.BitDepth != 8 {
				t.Fatalf("format %s depth %d", got.Format, got.BitDepth)
			}
			// The fast path must agree bit for bit with image/jpeg's own At().
			checkAgainst(t, got, ref)
		})
	}
}

// Every chroma subsampling the JPEG decoder can return, through the fast
// path, against the generic At() path.
func TestYCbCrSubsampling(t *testing.T) {
	ratios := []image.YCbCrSubsampleRatio{
		image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio420,
		image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410,
	}
	for _, r := range ratios {
		m := image.NewYCbCr(image.Rect(0, 0, 13, 7), r)
		for i := range m.Y {
			m.Y[i] = uint8(i * 31)
		}
		for i := range m.Cb {
			m.Cb[i], m.Cr[i] = uint8(i*53+7), uint8(255-i*19)
		}
		for o := 1; o <= 8; o++ {
			got, _ := toPlanar(m, o)
			for Y := 0; Y < got.H; Y++ {
				for X := 0; X < got.W; X++ {
					x, y := orientRef(o, 13, 7, X, Y)
					if at(got, X, Y) != straight(m.At(x, y)) {
						t.Fatalf("ratio %v orientation %d: pixel (%d,%d) differs from At()", r, o, X, Y)
					}
				}
			}
		}
	}
}

func TestJPEGEncodeQuality(t *testing.T) {
	src := smooth(64, 48)
	img, err := DecodeBytes(encPNG(t, src), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var hi, lo bytes.Buffer
	if err := Encode(&hi, img, EncodeOptions{Format: FormatJPEG}); err != nil {
		t.Fatal(err)
	}
	if err := Encode(&lo, img, EncodeOptions{Format: FormatJPEG, Quality: 20}); err != nil {
		t.Fatal(err)
	}
	if lo.Len() >= hi.Len() {
		t.Fatalf("quality 20 (%d bytes) not smaller than default 95 (%d bytes)", lo.Len(), hi.Len())
	}
	back, err := DecodeBytes(hi.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if back.Format != FormatJPEG || back.W != 64 || back.H != 48 {
		t.Fatalf("got %s %dx%d", back.Format, back.W, back.H)
	}
	// 4:2:0 chroma subsampling of a colour ramp costs a few levels at most.
	var maxd, sum float64
	for i := range img.Pix {
		d := math.Abs(float64(img.Pix[i] - back.Pix[i]))
		maxd, sum = math.Max(maxd, d), sum+d
	}
	if mean := sum / float64(len(img.Pix)); maxd > 12.0/255 || mean > 2.5/255 {
		t.Fatalf("quality 95: max error %.4f, mean %.4f", maxd, mean)
	}
}

func TestQuantiseRounding(t *testing.T) {
	for v := 0; v < 256; v++ {
		if q8(lut8[v]) != uint8(v) {
			t.Fatalf("q8(lut8[%d]) = %d", v, q8(lut8[v]))
		}
	}
	for v := 0; v < 65536; v++ {
		if q16(f16(uint16(v))) != uint16(v) {
			t.Fatalf("q16(f16(%d)) = %d", v, q16(f16(uint16(v))))
		}
	}
	nan := float32(math.NaN())
	for _, c := range []struct {
		in   float32
		want uint8
	}{{-1, 0}, {nan, 0}, {2, 255}, {float32(math.Inf(1)), 255}, {0.5 / 255, 1}, {0.49 / 255, 0}, {254.5 / 255, 255}, {0.5, 128}} {
		t.Run(fmt.Sprintf("q8(%v)", c.in), func(t *testing.T) {
			if got := q8(c.in); got != c.want {
				t.Errorf("q8(%v) = %d, want %d", c.in, got, c.want)
			}
		})
	}
}

func TestEncodeInvalid(t *testing.T) {
	img := NewImage(4, 3, FormatPNG, 8)
	for _, c := range []struct {
		name string
		img  *Image
		opts EncodeOptions
	}{
		{"gif", img, EncodeOptions{Format: "gif"}},
		{"quality 101", img, EncodeOptions{Format: FormatJPEG, Quality: 101}},
		{"12-bit", img, EncodeOptions{BitDepth: 12}},
		{"short pixels", &Image{W: 4, H: 3, Pix: make([]float32, 5), Format: FormatPNG}, EncodeOptions{}},
		{"nil image", nil, EncodeOptions{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantCode(t, Encode(io.Discard, c.img, c.opts), StageEncode, CodeInvalid)
		})
	}
	wantCode(t, Encode(failWriter{}, img, EncodeOptions{}), StageEncode, CodeIO)
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// orientRef gives the stored pixel shown at display position (X, Y), written
// from the EXIF definitions independently of the orienter used by the code.
func orientRef(o, w, h, X, Y int) (x, y int) {
	switch o {
	case 2:
		return w - 1 - X, Y
	case 3:
		return w - 1 - X, h - 1 - Y
	case 4:
		return X, h - 1 - Y
	case 5:
		return Y, X
	case 6:
		return Y, h - 1 - X
	case 7:
		return w - 1 - Y, h - 1 - X
	case 8:
		return w - 1 - Y, X
	}
	return X, Y
}

func TestEXIFOrientations(t *testing.T) {
	const w, h = 24, 16
	base := encJPEG(t, smooth(w, h), 95)
	plain, err := DecodeBytes(base, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for o := 1; o <= 8; o++ {
		for _, bo := range []binary.ByteOrder{binary.BigEndian, binary.LittleEndian} {
			t.Run(fmt.Sprintf("orientation%d/%v", o, bo), func(t *testing.T) {
				data := withSegment(base, exifAPP1(uint16(o), bo))
				p := writeTemp(t, "o.jpg", data)
				info, err := Probe(p, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				dw, dh := info.DisplaySize()
				if info.Orientation != o || info.Width != w || info.Height != h {
					t.Fatalf("probe %+v", info)
				}
				got, err := DecodeFile(p, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				if got.W != dw || got.H != dh {
					t.Fatalf("%dx%d, want %dx%d", got.W, got.H, dw, dh)
				}
				for Y := 0; Y < got.H; Y++ {
					for X := 0; X < got.W; X++ {
						x, y := orientRef(o, w, h, X, Y)
						if at(got, X, Y) != at(plain, x, y) {
							t.Fatalf("display (%d,%d) != stored (%d,%d)", X, Y, x, y)
						}
					}
				}
			})
		}
	}
	// Orientation only applies to JPEG; PNG stays as stored.
	if info, _ := ProbeReader(bytes.NewReader(encPNG(t, smooth(w, h))), Limits{}); info.Orientation != 1 {
		t.Fatalf("png orientation %d", info.Orientation)
	}
}

// Malformed EXIF is ignored: the image still decodes, unrotated.
func TestMalformedEXIFIgnored(t *testing.T) {
	base := encJPEG(t, smooth(16, 8), 90)
	good := exifAPP1(6, binary.BigEndian)
	bad := [][]byte{
		{0xFF, 0xE1, 0x00, 0x08, 'E', 'x', 'i', 'f', 0, 0},                            // empty TIFF
		append(append([]byte{}, good[:10]...), []byte("XX\x00\x2a")...),               // bad byte order (length lies)
		func() []byte { s := append([]byte{}, good...); s[14] = 0xFF; return s }(),    // IFD offset out of range
		func() []byte { s := append([]byte{}, good...); s[len(s)-7] = 9; return s }(), // orientation 9
	}
	for i, seg := range bad {
		img, err := DecodeBytes(withSegment(base, seg), Limits{})
		if err != nil {
			// A segment whose length runs past the data breaks the JPEG for
			// image/jpeg too; what matters is that we did not crash.
			continue
		}
		if img.W != 16 || img.H != 8 {
			t.Errorf("case %d: %dx%d, want unrotated 16x8", i, img.W, img.H)
		}
	}
}

func TestTruncated(t *testing.T) {
	files := map[string][]byte{
		"jpeg":        encJPEG(t, pattern8(40, 30), 90),
		"jpeg-smooth": encJPEG(t, smooth(64, 64), 50),
		"png":         encPNG(t, pattern8(40, 30)),
		"png16":       encPNG(t, pattern16(20, 10)),
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			truncated := 0
			for n := 1; n < len(data); n++ {
				img, err := DecodeBytes(data[:n], Limits{})
				if err == nil {
					t.Fatalf("cut to %d of %d bytes decoded to %dx%d", n, len(data), img.W, img.H)
				}
				e := asErr(t, err)
				if e.Code == CodeTruncated {
					truncated++
				}
			}
			// Most cuts land in entropy-coded or compressed data and must be
			// reported as truncation, not as a generic corruption.
			if truncated < (len(data)-1)*8/10 {
				t.Errorf("only %d of %d cuts reported as truncated", truncated, len(data)-1)
			}
			// And through a real file.
			p := writeTemp(t, "cut", data[:len(data)/2])
			_, err := DecodeFile(p, Limits{})
			wantCode(t, err, "", CodeTruncated)
		})
	}
}

func TestZeroBytes(t *testing.T) {
	p := writeTemp(t, "empty.jpg", nil)
	_, err := Probe(p, Limits{})
	wantCode(t, err, StageProbe, CodeEmpty)
	_, err = DecodeFile(p, Limits{})
	wantCode(t, err, StageProbe, CodeEmpty)
	_, err = ProbeReader(bytes.NewReader(nil), Limits{})
	wantCode(t, err, StageProbe, CodeEmpty)
	_, err = Decode(bytes.NewReader(nil), Limits{})
	wantCode(t, err, StageProbe, CodeEmpty)
}

func TestNotAnImage(t *testing.T) {
	p := writeTemp(t, "notes.jpg", []byte("this is a text file, not a picture\n"))
	_, err := DecodeFile(p, Limits{})
	wantCode(t, err, StageProbe, CodeNotImage)
	_, err = DecodeBytes([]byte("x"), Limits{})
	wantCode(t, err, StageProbe, CodeNotImage)
	_, err = DecodeBytes([]byte("GIF89a\x01\x00\x01\x00"), Limits{})
	wantCode(t, err, StageProbe, CodeUnsupported)
	// A JPEG signature followed by garbage is corrupt, not "not an image".
	_, err = DecodeBytes([]byte("\xff\xd8\xff\xe0garbage garbage garbage"), Limits{})
	if e := asErr(t, err); e.Code != CodeCorrupt && e.Code != CodeTruncated {
		t.Fatalf("code %s", e.Code)
	}
}

// pngHeader is a PNG signature and IHDR claiming w x h, 8-bit RGB, followed
// by a tiny IDAT: a decoder that trusted the header would allocate w*h*4.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(data)))
		b.Write(l[:])
		td := append([]byte(typ), data...)
		b.Write(td)
		binary.BigEndian.PutUint32(l[:], crc32IEEE(td))
		b.Write(l[:])
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

func TestOversizeHeaderRefusedWithoutAllocating(t *testing.T) {
	data := pngHeader(100000, 100000)
	p := writeTemp(t, "huge.png", data)
	_, err := Probe(p, Limits{MaxPixels: 50_000_000})
	wantCode(t, err, StageProbe, CodeTooLarge)
	if !strings.Contains(err.Error(), "100000x100000") {
		t.Fatalf("reason does not name the size: %v", err)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err1 := DecodeFile(p, Limits{MaxPixels: 50_000_000})
	_, err2 := DecodeBytes(data, Limits{MaxPixels: 50_000_000})
	runtime.ReadMemStats(&after)
	wantCode(t, err1, StageProbe, CodeTooLarge)
	wantCode(t, err2, StageProbe, CodeTooLarge)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("refusing an oversize header allocated %d bytes", d)
	}

	// The same for a JPEG SOF claiming 65535x65535 (default limit).
	jpg := encJPEG(t, smooth(8, 8), 90)
	i := bytes.Index(jpg, []byte{0xFF, 0xC0})
	binary.BigEndian.PutUint16(jpg[i+5:], 65535)
	binary.BigEndian.PutUint16(jpg[i+7:], 65535)
	_, err = DecodeBytes(jpg, Limits{})
	wantCode(t, err, StageProbe, CodeTooLarge)

	// Within the limit is fine; one pixel over is not.
	small := encPNG(t, pattern8(10, 10))
	if _, err := DecodeBytes(small, Limits{MaxPixels: 100}); err != nil {
		t.Fatal(err)
	}
	_, err = DecodeBytes(small, Limits{MaxPixels: 99})
	wantCode(t, err, StageProbe, CodeTooLarge)
}

func TestFileTooLarge(t *testing.T) {
	p := writeTemp(t, "a.png", encPNG(t, pattern8(10, 10)))
	_, err := DecodeFile(p, Limits{MaxBytes: 50})
	wantCode(t, err, StageProbe, CodeFileTooLarge)
	_, err = Decode(bytes.NewReader(encPNG(t, pattern8(10, 10))), Limits{MaxBytes: 50})
	wantCode(t, err, StageDecode, CodeFileTooLarge)
}

func TestSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.png")
	if err := os.WriteFile(target, encPNG(t, pattern8(4, 4)), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.png")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.png")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub.png")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path, code string
	}{
		{link, CodeSymlink},
		{fifo, CodeNotRegular},
		{sub, CodeNotRegular},
		{"/dev/null", CodeNotRegular},
		{filepath.Join(dir, "missing.png"), CodeNotFound},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.path), func(t *testing.T) {
			done := make(chan [2]error, 1)
			go func() {
				_, e1 := Probe(c.path, Limits{})
				_, e2 := DecodeFile(c.path, Limits{})
				done <- [2]error{e1, e2}
			}()
			select {
			case errs := <-done:
				wantCode(t, errs[0], StageProbe, c.code)
				wantCode(t, errs[1], StageProbe, c.code)
			case <-time.After(10 * time.Second):
				t.Fatal("blocked (a fifo must never be opened)")
			}
		})
	}
	// The link's target itself is fine.
	if _, err := DecodeFile(target, Limits{}); err != nil {
		t.Fatal(err)
	}
}

func TestErrorJSON(t *testing.T) {
	_, err := DecodeBytes(nil, Limits{})
	b, jerr := json.Marshal(AsError(err, StageDecode))
	if jerr != nil {
		t.Fatal(jerr)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["stage"] != StageProbe || m["code"] != CodeEmpty || m["reason"] == "" {
		t.Fatalf("json %s", b)
	}
	foreign := AsError(io.ErrClosedPipe, StageEncode)
	if foreign.Stage != StageEncode || !errors.Is(foreign, io.ErrClosedPipe) {
		t.Fatalf("%+v", foreign)
	}
}

func TestDecodeReader(t *testing.T) {
	img, err := Decode(bytes.NewReader(encPNG(t, pattern8(7, 3))), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkAgainst(t, img, pattern8(7, 3))
}

func TestYCCMatchesStdlib(t *testing.T) {
	for i := 0; i < 1<<24; i++ {
		y, cb, cr := uint8(i>>16), uint8(i>>8), uint8(i)
		r, g, b := ycc(y, cb, cr)
		r2, g2, b2 := color.YCbCrToRGB(y, cb, cr)
		if r != r2 || g != g2 || b != b2 {
			t.Fatalf("ycc(%d,%d,%d) = %d,%d,%d, want %d,%d,%d", y, cb, cr, r, g, b, r2, g2, b2)
		}
	}
}
