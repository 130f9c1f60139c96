package quality

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"hidiffd/imageio"
)

// The test images of testdata/ssim_reference.py, restated: integer formulas
// on 0..255, planar RGB, returned as float32 in [0,1] the way imageio decodes
// 8-bit files.
func testImage(kind string, w, h int) []float32 {
	out := make([]float32, 3*w*h)
	smooth := func(x, y, c int) int { return (x*4 + y*3 + c*40) % 256 }
	a := func(x, y, c int) int { return (x*x*7 + y*13 + c*29 + x*y*3) % 256 }
	for c := range 3 {
		for y := range h {
			for x := range w {
				var v int
				switch kind {
				case "a":
					v = a(x, y, c)
				case "b":
					v = a(x, y, c) + (x*5+y*11+c*17)%41 - 20
				case "c":
					v = smooth(x, y, c) + (x*7+y*y*3+c*11)%101 - 50
				case "smooth":
					v = smooth(x, y, c)
				default:
					panic(kind)
				}
				v = min(max(v, 0), 255)
				out[(c*h+y)*w+x] = float32(v) / 255
			}
		}
	}
	return out
}

// TestAgainstNumpy compares with numbers printed by
// testdata/ssim_reference.py, an independent numpy implementation (direct
// 2-D window, 0..255 float64, BasicSR's definition) - hard-coded here so the
// test needs no Python.
func TestAgainstNumpy(t *testing.T) {
	for _, c := range []struct {
		a, b       string
		w, h       int
		psnr, ssim float64
	}{
		{"a", "b", 23, 17, 26.8624642133356, 0.987639098532532},
		{"a", "b", 40, 31, 26.861472302196, 0.987664604326147},
		{"a", "smooth", 32, 32, 8.68182510881264, 0.01037846371922},
		{"smooth", "b", 11, 11, 9.0416499770754, 0.00152430449246003},
		{"smooth", "c", 29, 24, 18.9526007993317, 0.204719987825762},
	} {
		t.Run(fmt.Sprintf("%s-%s/%dx%d", c.a, c.b, c.w, c.h), func(t *testing.T) {
			a, b := testImage(c.a, c.w, c.h), testImage(c.b, c.w, c.h)
			p, err := PSNR(a, b)
			if err != nil || math.Abs(p-c.psnr) > 1e-5 {
				t.Errorf("PSNR %.10g, %v; numpy %.10g", p, err, c.psnr)
			}
			// The inputs are float32(k)/255, not k/255 exactly: a few 1e-8
			// relative, far below the 4 decimals SSIM is reported with.
			s, err := SSIM(c.w, c.h, a, b)
			if err != nil || math.Abs(s-c.ssim) > 1e-7 {
				t.Errorf("SSIM %.12g, %v; numpy %.12g (diff %.2g)", s, err, c.ssim, s-c.ssim)
			}
			if s2, _ := SSIM(c.w, c.h, b, a); math.Abs(s2-s) > 1e-12 {
				t.Errorf("SSIM not symmetric: %.15g vs %.15g", s, s2)
			}
		})
	}
}

func TestPSNR(t *testing.T) {
	a := testImage("a", 20, 13)
	if p, err := PSNR(a, append([]float32(nil), a...)); err != nil || !math.IsInf(p, 1) {
		t.Errorf("identical: %v, %v; want +Inf", p, err)
	}
	// Differences that are exact in float32: half the values off by 0.5,
	// half equal -> MSE 0.125 -> 10*log10(8) dB; all off by 0.25 -> MSE
	// 1/16 -> 10*log10(16).
	x, y := make([]float32, 600), make([]float32, 600)
	for i := range x {
		if i%2 == 0 {
			x[i] = 0.5
		}
	}
	if p, _ := PSNR(x, y); math.Abs(p-10*math.Log10(8)) > 1e-12 {
		t.Errorf("MSE 0.125: %.15g dB, want %.15g", p, 10*math.Log10(8))
	}
	for i := range x {
		x[i], y[i] = 0.25, 0.5
	}
	if p, _ := PSNR(x, y); math.Abs(p-12.041199826559248) > 1e-12 {
		t.Errorf("MSE 1/16: %.15g dB", p)
	}
	if _, err := PSNR(x, y[1:]); err == nil {
		t.Error("length mismatch: no error")
	}
	if _, err := PSNR(nil, nil); err == nil {
		t.Error("empty: no error")
	}
}

func TestSSIMIdenticalIsOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sz := range [][2]int{{11, 11}, {37, 12}, {64, 48}} {
		t.Run(fmt.Sprintf("%dx%d", sz[0], sz[1]), func(t *testing.T) {
			w, h := sz[0], sz[1]
			a := make([]float32, 3*w*h)
			for i := range a {
				a[i] = r.Float32()
			}
			if s, err := SSIM(w, h, a, append([]float32(nil), a...)); err != nil || math.Abs(s-1) > 1e-12 {
				t.Errorf("%dx%d random: %.15g, %v", w, h, s, err)
			}
			for i := range a {
				a[i] = 0.3 // flat: zero variance on both sides still gives 1
			}
			if s, _ := SSIM(w, h, a, a); math.Abs(s-1) > 1e-12 {
				t.Errorf("%dx%d flat: %.15g", w, h, s)
			}
		})
	}
}

func TestSSIMErrors(t *testing.T) {
	a := make([]float32, 3*10*20)
	if _, err := SSIM(10, 20, a, a); err == nil {
		t.Error("10 pixels wide (under the 11-pixel window): no error")
	}
	b := make([]float32, 3*12*12)
	if _, err := SSIM(12, 12, b, b[3:]); err == nil {
		t.Error("length mismatch: no error")
	}
	if _, err := SSIM(12, 11, b, b); err == nil {
		t.Error("values not whole planes: no error")
	}
	// One channel works too (a gray image).
	if s, err := SSIM(12, 12, b[:144], b[:144]); err != nil || s != 1 {
		t.Errorf("one channel: %v, %v", s, err)
	}
}

// TestQuantize8MatchesEncoder: an output quantised in memory is bit for bit
// what writing it as an 8-bit PNG and decoding that file gives.
func TestQuantize8MatchesEncoder(t *testing.T) {
	const w, h = 64, 9
	r := rand.New(rand.NewPCG(3, 4))
	img := imageio.NewImage(w, h, imageio.FormatPNG, 8)
	for i := range img.Pix {
		img.Pix[i] = r.Float32()*1.2 - 0.1 // some values out of range
	}
	// Every rounding boundary, from both sides, and the non-finite values.
	for k := 0; k < 256 && 2*k+1 < len(img.Pix); k++ {
		mid := (float32(k) + 0.5) / 255
		img.Pix[2*k] = math.Nextafter32(mid, 0)
		img.Pix[2*k+1] = mid
	}
	img.Pix[600] = float32(math.NaN())
	img.Pix[601] = float32(math.Inf(1))
	img.Pix[602] = float32(math.Inf(-1))
	var buf bytes.Buffer
	if err := imageio.Encode(&buf, img, imageio.EncodeOptions{BitDepth: 8}); err != nil {
		t.Fatal(err)
	}
	back, err := imageio.DecodeBytes(buf.Bytes(), imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	q := append([]float32(nil), img.Pix...)
	Quantize8(q)
	for i := range q {
		if q[i] != back.Pix[i] {
			t.Fatalf("value %d (%v): quantised %v, file gives %v", i, img.Pix[i], q[i], back.Pix[i])
		}
	}
}

// BenchmarkSSIM481x321 is one BSDS-sized RGB image (the eval target is 100
// of them).
func BenchmarkSSIM481x321(b *testing.B) {
	const w, h = 481, 321
	x, y := testImage("a", w, h), testImage("b", w, h)
	b.SetBytes(int64(4 * len(x)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SSIM(w, h, x, y); err != nil {
			b.Fatal(err)
		}
	}
}
