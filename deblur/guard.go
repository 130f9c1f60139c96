package deblur

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
)

// An FP16 engine can fail numerically where FP32 does not: a sum over a
// whole tile overflows to Inf, and a normalisation downstream turns the
// tile into NaN or into one flat value. The engine builder pins the known
// hazards to FP32 (trt/recipe.go), but an unforeseen one shows up only in
// the output. Guard checks every output and recomputes a bad tile on a
// fallback backend (an FP32 engine, or ONNX Runtime on the CPU), so one
// bad tile costs time, not a ruined frame.

// Guard reasons.
const (
	GuardNonFinite = "nonfinite" // NaN or Inf in the output
	GuardConstant  = "constant"  // one value everywhere, from an input that is not
)

// GuardEvent describes one bad output.
type GuardEvent struct {
	Call       string // "prior" or "transform"
	Reason     string // GuardNonFinite or GuardConstant
	Recomputed bool   // the fallback's output replaced it
	Fallback   string // the fallback backend's Name(), when it was available
	Err        error  // why it was not recomputed
}

// Guard is a Backend that checks its primary's outputs. It forwards
// UsesGPU (GPUBackend) and everything else to the primary.
type Guard struct {
	Backend
	open   func() (Backend, error)
	onTrip func(GuardEvent)

	mu     sync.Mutex
	fb     Backend
	fbErr  error
	closed bool
}

// NewGuard wraps primary. fallback opens the backend that recomputes bad
// outputs; it is called on the first bad output only (an ONNX Runtime
// session costs memory and seconds to open), and a failure is remembered.
// onTrip, if set, is told about every bad output (metrics, logs).
func NewGuard(primary Backend, fallback func() (Backend, error), onTrip func(GuardEvent)) *Guard {
	return &Guard{Backend: primary, open: fallback, onTrip: onTrip}
}

// Unwrap returns the primary backend.
func (g *Guard) Unwrap() Backend { return g.Backend }

// UsesGPU implements GPUBackend for a primary that does.
func (g *Guard) UsesGPU() bool {
	gb, ok := g.Backend.(GPUBackend)
	return ok && gb.UsesGPU()
}

// Prior implements Backend. A prior never comes out constant (it is made
// from Gaussian noise), so only non-finite values count.
func (g *Guard) Prior(ctx context.Context, blur, noise Tensor) (Tensor, error) {
	out, err := g.Backend.Prior(ctx, blur, noise)
	if err != nil || !hasNonFinite(out.Data) {
		return out, err
	}
	return g.recompute(out, GuardEvent{Call: "prior", Reason: GuardNonFinite}, func(fb Backend) (Tensor, error) {
		return fb.Prior(ctx, blur, noise)
	})
}

// Transform implements Backend.
func (g *Guard) Transform(ctx context.Context, blur, prior Tensor) (Tensor, error) {
	out, err := g.Backend.Transform(ctx, blur, prior)
	if err != nil {
		return out, err
	}
	reason := ""
	switch {
	case hasNonFinite(out.Data):
		reason = GuardNonFinite
	case ConstantOutput(blur.Data, out.Data):
		reason = GuardConstant
	default:
		return out, nil
	}
	return g.recompute(out, GuardEvent{Call: "transform", Reason: reason}, func(fb Backend) (Tensor, error) {
		return fb.Transform(ctx, blur, prior)
	})
}

// recompute runs call on the fallback. Without one, the bad output is
// returned as it is: the pipeline clamps it and counts it (Stats), and the
// frame is not lost to a fallback that cannot open.
func (g *Guard) recompute(bad Tensor, ev GuardEvent, call func(Backend) (Tensor, error)) (Tensor, error) {
	fb, err := g.fallback()
	if err == nil {
		ev.Fallback = fb.Name()
		var out Tensor
		if out, err = call(fb); err == nil {
			ev.Recomputed = true
			g.trip(ev)
			return out, nil
		}
		// A cancelled context is the frame's end, not a fallback failure.
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return Tensor{}, err
		}
	}
	ev.Err = err
	g.trip(ev)
	return bad, nil
}

func (g *Guard) trip(ev GuardEvent) {
	if g.onTrip != nil {
		g.onTrip(ev)
	}
}

func (g *Guard) fallback() (Backend, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return nil, errors.New("guard closed")
	case g.fb != nil || g.fbErr != nil:
		return g.fb, g.fbErr
	case g.open == nil:
		g.fbErr = errors.New("no fallback backend configured")
		return nil, g.fbErr
	}
	g.fb, g.fbErr = g.open()
	if g.fbErr != nil {
		g.fbErr = fmt.Errorf("opening the fallback backend: %w", g.fbErr)
	}
	return g.fb, g.fbErr
}

// Close closes the primary and, if it was opened, the fallback.
func (g *Guard) Close() error {
	g.mu.Lock()
	fb := g.fb
	first := !g.closed
	g.closed, g.fb = true, nil
	g.mu.Unlock()
	err := g.Backend.Close()
	if first && fb != nil {
		err = errors.Join(err, fb.Close())
	}
	return err
}

func hasNonFinite(v []float32) bool {
	for _, x := range v {
		if x-x != 0 { // NaN and ±Inf, without a call per value
			return true
		}
	}
	return false
}

// ConstantOutput reports an output that holds one value everywhere while
// its input does not (a flat input, a lens cap, may well give a flat
// output). Both scans stop at the first differing value, so a normal tile
// costs a few comparisons.
func ConstantOutput(in, out []float32) bool {
	if len(out) < 2 || !allEqual(out) {
		return false
	}
	return !allEqual(in)
}

func allEqual(v []float32) bool {
	if len(v) == 0 {
		return true
	}
	first := math.Float32bits(v[0])
	for _, x := range v[1:] {
		if math.Float32bits(x) != first {
			return false
		}
	}
	return true
}
