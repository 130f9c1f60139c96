package deblur

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// Options choose the tiling and the seed.
type Options struct {
	// Tile is the edge of the square network input in pixels, a multiple of
	// the model's pad multiple; 0 runs the whole padded frame at once. A frame
	// axis shorter than Tile is not tiled: that axis's tile is the padded
	// axis, so small frames never get padded up to the tile size.
	Tile int
	// Overlap is the minimum overlap between neighbouring tiles in pixels
	// (0 <= Overlap <= Tile - pad multiple). Actual overlaps can be larger:
	// tiles are spread evenly so the last one ends on the frame edge.
	Overlap int
	// Seed seeds the starting noise of the diffusion prior (StartingNoise).
	Seed uint64
	// MinTile is the smallest tile edge an out-of-memory retry may use.
	// When a backend call fails with ErrOutOfMemory, the frame is run again
	// from the start with the tile edge halved (down to a multiple of the
	// pad multiple), until it fits or the next halving would go below
	// MinTile; then the error is returned. 0: no retry.
	MinTile int
	// Gate, if set, is asked before every tile with the edge the pipeline
	// wants (Tile, or the padded frame's longer side when the frame is
	// not tiled). It may block (the GPU is too hot, memory is taken) and
	// returns the largest edge allowed now, or an error (ctx ended) that
	// ends the Run. Only the answer before a frame's first tile plans the
	// frame: a smaller edge mid-frame is left for the next frame, because
	// switching shapes mid-frame would make the backend allocate for a
	// second shape just when memory is short. Time spent in Gate is
	// Stats.Gated.
	Gate func(ctx context.Context, tileEdge int) (int, error)
}

// Stats describe one Run. Prior and Transform are the time spent inside the
// backend calls, summed over tiles; Total is the whole Run, so Overhead (pad,
// tile copy, blend, crop, clamp) is what the daemon should see stay small.
type Stats struct {
	Tiles            int    // network calls of each kind
	TileW, TileH     int    // shape of every network input (constant for a frame)
	Overlap          int    // overlap asked between tiles (0: one tile)
	Seed             uint64 // seed of the starting noise
	PaddedW, PaddedH int    // frame size after reflect padding
	Prior            time.Duration
	Transform        time.Duration
	Total            time.Duration
	// NonFinite counts NaN/Inf output values (written as 0 or 1 after
	// clamping). Non-zero means the engine misbehaved (e.g. FP16 overflow).
	NonFinite int
	// ConstantTiles counts tiles whose transformer output was one value
	// everywhere though the tile was not (ConstantOutput): another sign of
	// an engine that overflowed. Guard recomputes such tiles before they
	// get here; what is counted here got through.
	ConstantTiles int
	// OOMRetries counts runs of this frame repeated with smaller tiles
	// after the backend ran out of device memory. Prior and Transform
	// include the failed attempts' time; Tiles counts the last attempt.
	OOMRetries int
	// Gated is the time spent in Options.Gate (waiting for the GPU).
	Gated time.Duration
}

// Overhead is the time of Run outside the network calls and the gate.
func (s Stats) Overhead() time.Duration { return s.Total - s.Prior - s.Transform - s.Gated }

// Pipeline runs frames through one Backend. It keeps its scratch buffers
// (the tile tensor, the noise tensor, the tiling plan for the last frame
// size) between frames, so steady-state Runs allocate only the output image.
// A Pipeline is not safe for concurrent use; the backend is not either.
//
// Backends must not keep the input tensors after a call returns: the tile
// tensor is refilled for the next tile.
type Pipeline struct {
	b     Backend
	info  ModelInfo
	opts  Options
	noise []float32 // StartingNoise(opts.Seed, ...), the master copy

	// Scratch, reused across tiles and frames.
	blurT  Tensor
	noiseT Tensor

	// Plan for the last frame size and tiling seen.
	w, h       int
	ptile, pov int // the tile and overlap the plan was made for
	px, py     axisPlan
	xmap       []int // padded x -> source x (reflect)
	ymap       []int // padded y -> source y (reflect)
}

// NewPipeline checks opts against the backend's model and prepares the noise.
func NewPipeline(b Backend, opts Options) (*Pipeline, error) {
	info := b.Info()
	if info.PriorTokens <= 0 || info.PriorChannels <= 0 {
		return nil, fmt.Errorf("deblur: backend %s reports no prior shape (tokens %d, channels %d)",
			b.Name(), info.PriorTokens, info.PriorChannels)
	}
	p := &Pipeline{b: b, info: info}
	if err := p.SetOptions(opts); err != nil {
		return nil, err
	}
	return p, nil
}

// SetOptions changes the tiling or seed between frames (e.g. the throttle
// policy shrinking tiles).
func (p *Pipeline) SetOptions(opts Options) error {
	m := p.padMultiple()
	switch {
	case opts.Tile < 0:
		return fmt.Errorf("deblur: tile %d is negative", opts.Tile)
	case opts.Tile > 0 && opts.Tile%m != 0:
		return fmt.Errorf("deblur: tile %d is not a multiple of the model's pad multiple %d", opts.Tile, m)
	case opts.Tile > 0 && (opts.Overlap < 0 || opts.Overlap > opts.Tile-m):
		return fmt.Errorf("deblur: overlap %d outside 0..%d (tile %d minus pad multiple %d)",
			opts.Overlap, opts.Tile-m, opts.Tile, m)
	}
	if p.noise == nil || opts.Seed != p.opts.Seed {
		p.noise = StartingNoise(opts.Seed, p.info.PriorTokens*p.info.PriorChannels)
	}
	if opts.Tile != p.opts.Tile || opts.Overlap != p.opts.Overlap {
		p.w, p.h = 0, 0 // drop the cached plan
	}
	p.opts = opts
	return nil
}

// Options returns the current options.
func (p *Pipeline) Options() Options { return p.opts }

// Backend is the backend the pipeline runs.
func (p *Pipeline) Backend() Backend { return p.b }

func (p *Pipeline) padMultiple() int {
	if p.info.PadMultiple < 1 {
		return 1
	}
	return p.info.PadMultiple
}

// Run is NewPipeline + Pipeline.Run for one-off use.
func Run(ctx context.Context, b Backend, img Image, opts Options) (Image, Stats, error) {
	p, err := NewPipeline(b, opts)
	if err != nil {
		return Image{}, Stats{}, err
	}
	return p.Run(ctx, img)
}

// planTiles (re)computes the tiling for a w x h frame cut into tiles of
// edge tile (0: untiled) overlapping by overlap.
func (p *Pipeline) planTiles(w, h, tile, overlap int) {
	if w == p.w && h == p.h && tile == p.ptile && overlap == p.pov {
		return
	}
	m := p.padMultiple()
	pw, ph := PaddedSize(w, h, m)
	p.px = planAxis(pw, tile, overlap, m)
	p.py = planAxis(ph, tile, overlap, m)
	p.xmap = reflectTable(pw, w)
	p.ymap = reflectTable(ph, h)
	p.w, p.h, p.ptile, p.pov = w, h, tile, overlap
}

// wantEdge is the tile edge the options ask for on a w x h frame: Tile, or
// the padded frame's longer side when the frame is not tiled (Tile 0, or a
// frame no larger than a tile).
func (p *Pipeline) wantEdge(w, h int) int {
	pw, ph := PaddedSize(w, h, p.padMultiple())
	whole := max(pw, ph)
	if p.opts.Tile <= 0 || p.opts.Tile >= whole {
		return whole
	}
	return p.opts.Tile
}

// tiling is the tile and overlap to plan with for edge: the options' own
// when edge is what they ask for, else edge on the pad grid with the
// overlap kept below half of it (as config requires of model.overlap).
func (p *Pipeline) tiling(edge, want int) (tile, overlap int) {
	if edge >= want {
		return p.opts.Tile, p.opts.Overlap
	}
	m := p.padMultiple()
	tile = max(edge/m*m, m)
	overlap = min(p.opts.Overlap, max(tile/2-m, 0))
	return tile, overlap
}

// gate asks Options.Gate, timing the wait.
func (p *Pipeline) gate(ctx context.Context, want int, st *Stats) (int, error) {
	if p.opts.Gate == nil {
		return want, nil
	}
	t := time.Now()
	edge, err := p.opts.Gate(ctx, want)
	st.Gated += time.Since(t)
	if err != nil {
		return 0, fmt.Errorf("deblur: %s: waiting for the device: %w", p.b.Name(), err)
	}
	if edge <= 0 || edge > want {
		edge = want
	}
	return edge, nil
}

// Run deblurs one frame: reflect-pad right/bottom to the pad multiple, cut
// fixed-size overlapping tiles, run prior then transformer on each tile with
// the same starting noise, blend, crop to the input size and clamp to [0,1].
// The same input and seed give the same output bit for bit (given a
// deterministic backend and the same tiling). The returned image is newly
// allocated; img is not modified. ctx is checked between tiles and handed
// to the backend. Options.Gate is asked before every tile; a backend out
// of device memory makes the frame run again with smaller tiles, down to
// Options.MinTile.
func (p *Pipeline) Run(ctx context.Context, img Image) (Image, Stats, error) {
	t0 := time.Now()
	var st Stats
	if err := img.Validate(); err != nil {
		return Image{}, st, err
	}
	want := p.wantEdge(img.W, img.H)
	edge, err := p.gate(ctx, want, &st)
	if err != nil {
		return Image{}, st, err
	}
	for {
		out, err := p.attempt(ctx, img, edge, want, &st)
		if err == nil || !IsOutOfMemory(err) {
			st.Total = time.Since(t0)
			return out, st, err
		}
		// Halve, on the pad grid, but try MinTile itself before giving up.
		m := p.padMultiple()
		floor := max((p.opts.MinTile+m-1)/m*m, m)
		if p.opts.MinTile <= 0 || edge <= floor {
			st.Total = time.Since(t0)
			return Image{}, st, fmt.Errorf("%w (tile %d; no retry below the minimum tile %d)", err, edge, p.opts.MinTile)
		}
		st.OOMRetries++
		edge = max(edge/2/m*m, floor)
	}
}

// attempt runs the whole frame once with tiles of at most edge pixels.
// Run asked the gate before the first attempt's first tile; every later
// tile (and a retry's first) asks again here.
func (p *Pipeline) attempt(ctx context.Context, img Image, edge, want int, st *Stats) (Image, error) {
	tile, overlap := p.tiling(edge, want)
	p.planTiles(img.W, img.H, tile, overlap)
	tw, th := p.px.tile, p.py.tile
	st.TileW, st.TileH = tw, th
	st.PaddedW, st.PaddedH = p.px.size, p.py.size
	st.Seed, st.Overlap = p.opts.Seed, overlap
	if len(p.px.starts)*len(p.py.starts) == 1 {
		st.Overlap = 0
	}
	nx, ny := len(p.px.starts), len(p.py.starts)
	total := nx * ny
	st.Tiles = 0

	shape := []int64{1, 3, int64(th), int64(tw)}
	// Reuse the tile buffer only for the same shape: a 64x96 frame after a
	// 96x64 one has the same element count but not the same tensor.
	if !slices.Equal(p.blurT.Shape, shape) {
		p.blurT = NewTensor(shape...)
	}
	if p.noiseT.Len() != len(p.noise) || len(p.noiseT.Data) != len(p.noise) {
		p.noiseT = NewTensor(1, int64(p.info.PriorTokens), int64(p.info.PriorChannels))
	}
	out := Image{W: img.W, H: img.H, Pix: make([]float32, len(img.Pix))}

	for j, y0 := range p.py.starts {
		for i, x0 := range p.px.starts {
			k := j*nx + i + 1
			where := func() string {
				return fmt.Sprintf("deblur: %s: tile %d/%d at x=%d y=%d (%dx%d)", p.b.Name(), k, total, x0, y0, tw, th)
			}
			if err := ctx.Err(); err != nil {
				return Image{}, fmt.Errorf("%s: %w", where(), err)
			}
			if k > 1 || st.OOMRetries > 0 {
				if _, err := p.gate(ctx, want, st); err != nil {
					return Image{}, fmt.Errorf("%s: %w", where(), err)
				}
			}
			p.extract(img, x0, y0)
			// A fresh copy per tile: every tile must start from the same
			// noise even if a backend wrote into its input.
			copy(p.noiseT.Data, p.noise)

			t := time.Now()
			prior, err := p.b.Prior(ctx, p.blurT, p.noiseT)
			st.Prior += time.Since(t)
			if err != nil {
				return Image{}, fmt.Errorf("%s: prior: %w", where(), err)
			}
			if err := prior.Validate(); err != nil || len(prior.Data) != len(p.noise) {
				return Image{}, fmt.Errorf("%s: prior returned shape %v (%d values), want [1 %d %d]",
					where(), prior.Shape, len(prior.Data), p.info.PriorTokens, p.info.PriorChannels)
			}

			t = time.Now()
			sharp, err := p.b.Transform(ctx, p.blurT, prior)
			st.Transform += time.Since(t)
			if err != nil {
				return Image{}, fmt.Errorf("%s: transform: %w", where(), err)
			}
			if err := sharp.Validate(); err != nil || !slices.Equal(sharp.Shape, shape) {
				return Image{}, fmt.Errorf("%s: transform returned shape %v (%d values), want %v",
					where(), sharp.Shape, len(sharp.Data), shape)
			}
			if ConstantOutput(p.blurT.Data, sharp.Data) {
				st.ConstantTiles++
			}
			st.NonFinite += p.blend(out, sharp.Data, i, j)
			st.Tiles++
		}
	}
	return out, nil
}

// extract copies the tile at padded (x0, y0) into the tile tensor, reading
// the unpadded frame through the reflect tables: rows and the in-frame part
// of each row are plain copies, only the padded columns are gathered.
func (p *Pipeline) extract(img Image, x0, y0 int) {
	tw, th := p.px.tile, p.py.tile
	w, n := img.W, img.W*img.H
	inFrame := min(tw, w-x0) // x0 < w always: a tile cannot start inside the padding
	dst := p.blurT.Data
	for c := 0; c < 3; c++ {
		plane := img.Pix[c*n : (c+1)*n]
		for ty := 0; ty < th; ty++ {
			src := plane[p.ymap[y0+ty]*w : p.ymap[y0+ty]*w+w]
			row := dst[(c*th+ty)*tw : (c*th+ty+1)*tw]
			copy(row[:inFrame], src[x0:x0+inFrame])
			for tx := inFrame; tx < tw; tx++ {
				row[tx] = src[p.xmap[x0+tx]]
			}
		}
	}
}

// blend adds tile (i, j)'s output, weighted, into the cropped output. Rows
// and columns in the padding are skipped: they are cropped anyway.
//
// It also clamps, in the same pass, every pixel this tile is the last to
// touch: tiles run row-major, so pixel (x, y) is final after the tile whose
// start is the greatest one <= x in the last tile row whose start is <= y.
// That saves a separate pass over the whole frame.
func (p *Pipeline) blend(out Image, sharp []float32, i, j int) (nonFinite int) {
	tw, th := p.px.tile, p.py.tile
	x0, y0 := p.px.starts[i], p.py.starts[j]
	wx, wy := p.px.norm[i], p.py.norm[j]
	w, n := out.W, out.W*out.H
	cols := min(tw, w-x0)
	rows := min(th, out.H-y0)
	wx = wx[:cols]
	// Columns [0, finalCols) and rows [0, finalRows) of this tile get no
	// later contribution.
	finalCols, finalRows := cols, rows
	if i+1 < len(p.px.starts) {
		finalCols = min(cols, p.px.starts[i+1]-x0)
	}
	if j+1 < len(p.py.starts) {
		finalRows = min(rows, p.py.starts[j+1]-y0)
	}
	for c := 0; c < 3; c++ {
		for ty := 0; ty < rows; ty++ {
			s := sharp[(c*th+ty)*tw : (c*th+ty)*tw+cols]
			o := out.Pix[c*n+(y0+ty)*w+x0 : c*n+(y0+ty)*w+x0+cols]
			a := wy[ty]
			s, wx := s[:len(o)], wx[:len(o)] // lets the compiler drop bounds checks
			for tx := range o {
				o[tx] += s[tx] * (a * wx[tx])
			}
			if ty < finalRows {
				nonFinite += clampUnit(o[:finalCols])
			}
		}
	}
	return nonFinite
}

// clampUnit clamps to [0,1] in place (NaN -> 0, as the encoder would) and
// counts the non-finite values it met.
func clampUnit(v []float32) (nonFinite int) {
	for i, x := range v {
		switch {
		case x >= 0 && x <= 1:
		case x > 1:
			if x > math.MaxFloat32 {
				nonFinite++
			}
			v[i] = 1
		case x < 0:
			if x < -math.MaxFloat32 {
				nonFinite++
			}
			v[i] = 0
		default: // NaN
			nonFinite++
			v[i] = 0
		}
	}
	return nonFinite
}
