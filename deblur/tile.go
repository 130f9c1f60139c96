package deblur

import "math"

// axisPlan is the tiling of one axis of the padded frame: where each tile
// starts and, per tile, the blending weight of each of its pixels already
// divided by the sum over all tiles covering that pixel.
//
// Because the tiles form a full grid (every x start is combined with every y
// start) and the 2-D weight is the product of two 1-D weights, the 2-D weight
// sum factorises into the product of the 1-D sums. Normalising each axis once
// therefore makes the 2-D weights of every pixel sum to 1, and blending is a
// single multiply-add into the output: no weight-sum buffer and no divide
// pass over the frame.
type axisPlan struct {
	size   int         // padded length of the axis
	tile   int         // tile length along the axis (all tiles equal)
	starts []int       // tile origins, ascending; first 0, last size-tile
	norm   [][]float32 // norm[i][k]: normalised weight of pixel k of tile i
}

// planAxis tiles an axis of padded length size (a multiple of m) with tiles
// of length tile (a multiple of m, 0 = no tiling) overlapping by at least
// overlap. When the axis fits in one tile, that axis's tile is the whole
// axis. Otherwise the last tile ends on the far edge and the starts in between
// are spread evenly on multiples of m, so the overlaps are nearly equal (none
// below overlap) and every tile sees the same phase of the network's
// downsampling grid (pixel-unshuffle by 2 three times, pooling), which keeps
// neighbouring tiles consistent where they are blended.
func planAxis(size, tile, overlap, m int) axisPlan {
	if m < 1 {
		m = 1
	}
	if tile <= 0 || size <= tile {
		return axisPlan{size: size, tile: size, starts: []int{0}, norm: [][]float32{ones(size)}}
	}
	L := (size - tile) / m    // span of the starts, in units of m
	S := (tile - overlap) / m // largest stride that keeps the overlap, >= 1 (checked by the caller)
	k := (L + S - 1) / S      // number of gaps
	starts := make([]int, k+1)
	for i := range starts {
		starts[i] = m * ((2*i*L + k) / (2 * k)) // round(i*L/k) * m; consecutive gaps <= ceil(L/k) <= S
	}
	raw := make([][]float64, len(starts))
	sum := make([]float64, size)
	for i, s := range starts {
		w := make([]float64, tile)
		for p := range w {
			v := 1.0
			if i > 0 {
				v *= ramp(p, starts[i-1]+tile-s)
			}
			if i < len(starts)-1 {
				v *= ramp(tile-1-p, s+tile-starts[i+1])
			}
			w[p] = v
			sum[s+p] += v
		}
		raw[i] = w
	}
	norm := make([][]float32, len(starts))
	for i, s := range starts {
		n := make([]float32, tile)
		for p := range n {
			n[p] = float32(raw[i][p] / sum[s+p])
		}
		norm[i] = n
	}
	return axisPlan{size: size, tile: tile, starts: starts, norm: norm}
}

// ramp is a raised-cosine rise over an overlap of width ov, evaluated at
// pixel centres: d is the distance in pixels from the tile's edge. It is
// strictly positive (so a pixel is never left without weight, whatever the
// overlap) and reaches 1 once d >= ov, so a tile's own area is blended only
// with neighbours that actually cover it. The smooth start avoids the visible
// kink a linear ramp leaves at the overlap boundary.
func ramp(d, ov int) float64 {
	if d >= ov {
		return 1
	}
	return 0.5 - 0.5*math.Cos(math.Pi*(float64(d)+0.5)/float64(ov))
}

func ones(n int) []float32 {
	o := make([]float32, n)
	for i := range o {
		o[i] = 1
	}
	return o
}
