package deblur

import (
	"context"
	"errors"
	"math"
	"testing"
)

// brokenBackend stands in for an FP16 engine gone wrong: Transform returns
// NaN in one element, or one flat value, for the first bad tiles.
type brokenBackend struct {
	fakeIdentityBackend
	mode   string // "nan", "const", "inf-prior"
	bad    int    // how many calls misbehave
	closed int
}

func (b *brokenBackend) Name() string  { return "broken" }
func (b *brokenBackend) UsesGPU() bool { return true }
func (b *brokenBackend) Close() error  { b.closed++; return nil }

func (b *brokenBackend) Prior(ctx context.Context, blur, noise Tensor) (Tensor, error) {
	out, _ := b.fakeIdentityBackend.Prior(ctx, blur, noise)
	if b.mode == "inf-prior" && b.bad > 0 {
		b.bad--
		out = NewTensor(noise.Shape...)
		out.Data[3] = float32(math.Inf(1))
	}
	return out, nil
}

func (b *brokenBackend) Transform(ctx context.Context, blur, prior Tensor) (Tensor, error) {
	in, _ := b.fakeIdentityBackend.Transform(ctx, blur, prior)
	out := NewTensor(in.Shape...)
	copy(out.Data, in.Data)
	if b.bad > 0 && b.mode != "inf-prior" {
		b.bad--
		switch b.mode {
		case "nan":
			out.Data[7] = float32(math.NaN())
		case "const":
			for i := range out.Data {
				out.Data[i] = 0.5
			}
		}
	}
	return out, nil
}

func gradientImage(w, h int) Image {
	img := Image{W: w, H: h, Pix: make([]float32, 3*w*h)}
	for i := range img.Pix {
		img.Pix[i] = float32(i%97) / 97
	}
	return img
}

func TestGuardRecomputesBadTiles(t *testing.T) {
	for _, mode := range []string{"nan", "const", "inf-prior"} {
		t.Run(mode, func(t *testing.T) {
			primary := &brokenBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, mode: mode, bad: 2}
			fallback := &fakeIdentityBackend{info: fakeInfo(8)}
			opened := 0
			var events []GuardEvent
			g := NewGuard(primary, func() (Backend, error) { opened++; return fallback, nil },
				func(ev GuardEvent) { events = append(events, ev) })
			if !g.UsesGPU() || g.Unwrap() != primary || g.Name() != "broken" {
				t.Error("guard does not forward")
			}
			img := gradientImage(64, 48)
			out, st, err := Run(context.Background(), g, img, Options{Tile: 32, Overlap: 8})
			if err != nil {
				t.Fatal(err)
			}
			if st.NonFinite != 0 || st.ConstantTiles != 0 {
				t.Errorf("bad values got through: %+v", st)
			}
			// Identity backends: the output is the input, tile for tile.
			for i := range out.Pix {
				if math.Abs(float64(out.Pix[i]-img.Pix[i])) > 1e-5 {
					t.Fatalf("pixel %d = %v, want %v", i, out.Pix[i], img.Pix[i])
				}
			}
			if opened != 1 || len(events) != 2 || !events[0].Recomputed || events[0].Fallback != "fake-identity" {
				t.Errorf("opened %d, events %+v", opened, events)
			}
			want := map[string]string{"nan": GuardNonFinite, "const": GuardConstant, "inf-prior": GuardNonFinite}[mode]
			if events[0].Reason != want {
				t.Errorf("reason %s, want %s", events[0].Reason, want)
			}
			if err := g.Close(); err != nil || primary.closed != 1 {
				t.Errorf("close: %v, %d", err, primary.closed)
			}
			g.Close()
			if primary.closed != 2 {
				t.Errorf("second Close reached the primary %d times (it must be harmless there too)", primary.closed)
			}
		})
	}
}

func TestGuardWithoutFallback(t *testing.T) {
	primary := &brokenBackend{fakeIdentityBackend: fakeIdentityBackend{info: fakeInfo(8)}, mode: "const", bad: 100}
	var events []GuardEvent
	opens := 0
	g := NewGuard(primary, func() (Backend, error) { opens++; return nil, errors.New("libonnxruntime.so.1 not found") },
		func(ev GuardEvent) { events = append(events, ev) })
	_, st, err := Run(context.Background(), g, gradientImage(64, 48), Options{Tile: 32, Overlap: 8})
	if err != nil {
		t.Fatal(err) // the frame survives
	}
	if st.ConstantTiles != st.Tiles || opens != 1 || len(events) != st.Tiles || events[0].Recomputed || events[0].Err == nil {
		t.Errorf("stats %+v, opens %d, events %+v", st, opens, events)
	}
}

func TestConstantOutput(t *testing.T) {
	flat := []float32{0.2, 0.2, 0.2}
	if !ConstantOutput([]float32{0, 1, 0}, flat) || ConstantOutput(flat, flat) ||
		ConstantOutput([]float32{0, 1, 0}, []float32{0.2, 0.2, 0.3}) || ConstantOutput([]float32{0, 1}, []float32{1}) {
		t.Error("ConstantOutput")
	}
}
