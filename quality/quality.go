// Package quality holds the full-reference image metrics the model card
// reports: PSNR and SSIM, defined as the HI-Diff evaluation code (BasicSR's
// basicsr/metrics/psnr_ssim.py, calculate_psnr and calculate_ssim with
// crop_border 0 and test_y_channel false) defines them, so numbers here can be
// set beside the paper's.
//
// Images are planar float32 in [0,1] (all of channel 0, then channel 1, ...;
// the layout imageio decodes to). BasicSR works on 0..255 values; both metrics
// are unchanged by scaling the data and the data range together, so data
// range 1 here gives the same numbers (up to float64 rounding).
package quality

import (
	"errors"
	"fmt"
	"math"
)

// PSNR is the peak signal-to-noise ratio of a against ref in dB, with data
// range 1: 10*log10(1/MSE), the MSE taken over every value (all channels
// together, as BasicSR does on RGB). Identical inputs give +Inf, as BasicSR's
// calculate_psnr does; callers that must print or serialise it decide how.
func PSNR(a, ref []float32) (float64, error) {
	if len(a) != len(ref) {
		return 0, fmt.Errorf("quality: PSNR of %d values against %d", len(a), len(ref))
	}
	if len(a) == 0 {
		return 0, errors.New("quality: PSNR of empty images")
	}
	var sum float64
	for i, v := range a {
		d := float64(v) - float64(ref[i])
		sum += d * d
	}
	mse := sum / float64(len(a))
	if mse == 0 {
		return math.Inf(1), nil
	}
	return -10 * math.Log10(mse), nil
}

// SSIM window and constants (Wang et al. 2004, as BasicSR's _ssim uses them):
// an 11x11 Gaussian window with sigma 1.5 (cv2.getGaussianKernel(11, 1.5),
// outer product with itself), K1 = 0.01, K2 = 0.03, data range L = 1.
const (
	Window = 11
	radius = Window / 2
	Sigma  = 1.5
	c1     = (0.01 * 1) * (0.01 * 1) // (K1*L)^2
	c2     = (0.03 * 1) * (0.03 * 1) // (K2*L)^2
)

// gauss is the normalised 1-D window; the 2-D window is its outer product,
// which is what makes the filter separable.
var gauss = func() (g [Window]float64) {
	var sum float64
	for i := range g {
		x := float64(i - radius)
		g[i] = math.Exp(-x * x / (2 * Sigma * Sigma))
		sum += g[i]
	}
	for i := range g {
		g[i] /= sum
	}
	return g
}()

// SSIM is the mean structural similarity of a against ref, w x h planar
// images with len/(w*h) channels: the SSIM map of each channel is computed
// over the 'valid' region only (the window never leaves the image, so the
// 5-pixel border is dropped, as BasicSR does by filtering then cropping
// [5:-5, 5:-5]), averaged over its pixels, and the channel means averaged.
// Identical inputs give 1. Images narrower or shorter than the 11-pixel
// window have no valid region; that is an error here (BasicSR would return
// the NaN mean of an empty map).
//
// The local means and (co)variances come from a separable filter, a row pass
// into a ring of 11 rows and a column pass over it, in float64; memory is a
// few rows, whatever the image size, and nothing is allocated per pixel.
func SSIM(w, h int, a, ref []float32) (float64, error) {
	n := w * h
	switch {
	case w <= 0 || h <= 0:
		return 0, fmt.Errorf("quality: SSIM of a %dx%d image", w, h)
	case len(a) != len(ref):
		return 0, fmt.Errorf("quality: SSIM of %d values against %d", len(a), len(ref))
	case len(a) == 0 || len(a)%n != 0:
		return 0, fmt.Errorf("quality: %d values are not whole %dx%d planes", len(a), w, h)
	case w < Window || h < Window:
		return 0, fmt.Errorf("quality: SSIM needs at least %dx%d pixels (the window), image is %dx%d", Window, Window, w, h)
	}
	s := newScratch(w)
	var sum float64
	channels := len(a) / n
	for c := range channels {
		sum += s.plane(w, h, a[c*n:(c+1)*n], ref[c*n:(c+1)*n])
	}
	return sum / float64(channels), nil
}

// The five local statistics the SSIM formula needs, filtered with the window.
const (
	sX = iota
	sY
	sXX
	sYY
	sXY
	nStats
)

type scratch struct {
	vw         int                       // valid width: w - Window + 1
	ring       [nStats][Window][]float64 // row-filtered statistics of the last 11 rows
	acc        [nStats][]float64         // column pass of one output row
	rowX, rowY []float64                 // one input row, widened to float64
}

func newScratch(w int) *scratch {
	vw := w - Window + 1
	s := &scratch{vw: vw, rowX: make([]float64, w), rowY: make([]float64, w)}
	// One backing array keeps the rows together in memory.
	buf := make([]float64, (nStats*Window+nStats)*vw)
	for k := range nStats {
		for r := range Window {
			s.ring[k][r], buf = buf[:vw:vw], buf[vw:]
		}
		s.acc[k], buf = buf[:vw:vw], buf[vw:]
	}
	return s
}

// plane returns the mean of one channel's SSIM map over the valid region.
func (s *scratch) plane(w, h int, x, y []float32) float64 {
	vw := s.vw
	var total float64
	for r := range h {
		// Row pass: the five statistics of input row r, filtered along x,
		// into ring slot r % Window.
		for i := range w {
			s.rowX[i] = float64(x[r*w+i])
			s.rowY[i] = float64(y[r*w+i])
		}
		slot := r % Window
		fx, fy := s.ring[sX][slot], s.ring[sY][slot]
		fxx, fyy, fxy := s.ring[sXX][slot], s.ring[sYY][slot], s.ring[sXY][slot]
		for i := range vw {
			var mx, my, mxx, myy, mxy float64
			px, py := s.rowX[i:i+Window], s.rowY[i:i+Window]
			for k, g := range gauss {
				u, v := px[k], py[k]
				mx += g * u
				my += g * v
				mxx += g * u * u
				myy += g * v * v
				mxy += g * u * v
			}
			fx[i], fy[i], fxx[i], fyy[i], fxy[i] = mx, my, mxx, myy, mxy
		}
		if r < Window-1 {
			continue
		}
		// Column pass for output row r-10: rows r-10..r are in the ring.
		top := r - (Window - 1)
		for k := range nStats {
			clear(s.acc[k])
		}
		for t, g := range gauss {
			slot := (top + t) % Window
			for k := range nStats {
				acc, src := s.acc[k], s.ring[k][slot]
				for i := range acc {
					acc[i] += g * src[i]
				}
			}
		}
		mx, my, mxx, myy, mxy := s.acc[sX], s.acc[sY], s.acc[sXX], s.acc[sYY], s.acc[sXY]
		for i := range vw {
			m1, m2 := mx[i], my[i]
			m11, m22, m12 := m1*m1, m2*m2, m1*m2
			v1, v2, cov := mxx[i]-m11, myy[i]-m22, mxy[i]-m12
			total += ((2*m12 + c1) * (2*cov + c2)) / ((m11 + m22 + c1) * (v1 + v2 + c2))
		}
	}
	return total / float64(vw*(h-Window+1))
}

// Quantize8 rounds every value to the 8-bit grid in place, exactly as
// imageio's encoder does when it writes an 8-bit file (q8 in
// imageio/encode.go): clamp to [0,1] (NaN -> 0), then uint8(x*255+0.5) in
// float32, divided back by 255. Metrics of a network output quantised this
// way are those of the saved file, which is what an evaluation from files
// (BasicSR reading PNGs) would measure.
func Quantize8(v []float32) {
	for i, x := range v {
		var q uint8
		switch {
		case !(x > 0):
			q = 0
		case x >= 1:
			q = 255
		default:
			q = uint8(x*255 + 0.5)
		}
		// Division (not multiplication by 1/255) gives the same float32 the
		// decoder produces for the byte q, so a quantised output and the
		// decoded file are bit-identical.
		v[i] = float32(q) / 255
	}
}
