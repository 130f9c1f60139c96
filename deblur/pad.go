package deblur

import "fmt"

// Image is a frame in network layout: planar RGB (R plane, G plane, B
// plane, each H rows of W), float32, nominally in [0,1]. It is the same layout
// as imageio.Image.Pix, so the daemon passes the slice through without a copy.
type Image struct {
	W, H int
	Pix  []float32 // len 3*W*H
}

// Validate reports an image whose buffer does not match its size.
func (m Image) Validate() error {
	if m.W <= 0 || m.H <= 0 || len(m.Pix) != 3*m.W*m.H {
		return fmt.Errorf("deblur: image %dx%d has %d values, want %d", m.W, m.H, len(m.Pix), 3*m.W*m.H)
	}
	return nil
}

// PaddedSize rounds w and h up to a multiple of m (m <= 1 means no padding).
func PaddedSize(w, h, m int) (pw, ph int) {
	if m <= 1 {
		return w, h
	}
	return (w + m - 1) / m * m, (h + m - 1) / m * m
}

// reflectIndex maps a coordinate i >= 0 of the padded axis onto [0, n) the way
// PyTorch's F.pad(mode="reflect") does: mirror about the edge pixel without
// repeating it (n+k -> n-2-k). PyTorch refuses pads >= n; we keep reflecting
// (the mirror is periodic with period 2(n-1)), so a tiny image still pads to
// the network's multiple, and for n == 1 the only pixel is repeated. For pads
// < n the result is exactly PyTorch's, which is all the reference ever uses.
func reflectIndex(i, n int) int {
	if n <= 1 {
		return 0
	}
	p := 2 * (n - 1)
	i %= p
	if i >= n {
		i = p - i
	}
	return i
}

// reflectTable is reflectIndex for i in [0, padded).
func reflectTable(padded, n int) []int {
	t := make([]int, padded)
	for i := range t {
		t[i] = reflectIndex(i, n)
	}
	return t
}

// PadReflect returns img reflect-padded on the right and bottom to pw x ph
// (each at least the image size). The pipeline does not call it: it reads
// tiles straight from the unpadded frame through the same index mapping, so a
// padded copy of the whole frame is never made. It is here for tools and as
// the reference in tests.
func PadReflect(img Image, pw, ph int) (Image, error) {
	if err := img.Validate(); err != nil {
		return Image{}, err
	}
	if pw < img.W || ph < img.H {
		return Image{}, fmt.Errorf("deblur: pad target %dx%d smaller than image %dx%d", pw, ph, img.W, img.H)
	}
	out := Image{W: pw, H: ph, Pix: make([]float32, 3*pw*ph)}
	xs, ys := reflectTable(pw, img.W), reflectTable(ph, img.H)
	n, pn := img.W*img.H, pw*ph
	for c := 0; c < 3; c++ {
		for y := 0; y < ph; y++ {
			src := img.Pix[c*n+ys[y]*img.W : c*n+ys[y]*img.W+img.W]
			dst := out.Pix[c*pn+y*pw : c*pn+y*pw+pw]
			copy(dst, src)
			for x := img.W; x < pw; x++ {
				dst[x] = src[xs[x]]
			}
		}
	}
	return out, nil
}
