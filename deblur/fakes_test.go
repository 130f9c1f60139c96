package deblur

import (
	"context"
	"errors"
	"math/rand/v2"
)

// Fake backends for the pipeline tests. None of them is a model; they stand
// in for one so that padding, tiling, blending and error handling can be
// checked exactly.

func fakeInfo(padMultiple int) ModelInfo {
	return ModelInfo{Model: "fake", PadMultiple: padMultiple, PriorTokens: 16, PriorChannels: 256}
}

// fakeIdentityBackend: Prior returns the noise, Transform returns the blur.
// It records every call's input so tests can check shapes, tile contents and
// the noise each tile got.
type fakeIdentityBackend struct {
	info    ModelInfo
	record  bool
	blurs   []Tensor // copies of the Transform inputs, in call order
	noises  [][]float32
	priors  int
	transfs int
}

func (f *fakeIdentityBackend) Name() string    { return "fake-identity" }
func (f *fakeIdentityBackend) Info() ModelInfo { return f.info }
func (f *fakeIdentityBackend) Close() error    { return nil }

func (f *fakeIdentityBackend) Prior(_ context.Context, blur, noise Tensor) (Tensor, error) {
	f.priors++
	if f.record {
		f.noises = append(f.noises, append([]float32(nil), noise.Data...))
	}
	return noise, nil
}

func (f *fakeIdentityBackend) Transform(_ context.Context, blur, prior Tensor) (Tensor, error) {
	f.transfs++
	if f.record {
		f.blurs = append(f.blurs, Tensor{Shape: append([]int64(nil), blur.Shape...), Data: append([]float32(nil), blur.Data...)})
	}
	return blur, nil
}

// fakeNoiseMixBackend mixes the starting noise into the output, so the seed
// shows in the result: prior = noise + mean(blur); sharp = blur + 0.01*prior
// cycled over the pixels.
type fakeNoiseMixBackend struct{ info ModelInfo }

func (f *fakeNoiseMixBackend) Name() string    { return "fake-noisemix" }
func (f *fakeNoiseMixBackend) Info() ModelInfo { return f.info }
func (f *fakeNoiseMixBackend) Close() error    { return nil }

func (f *fakeNoiseMixBackend) Prior(_ context.Context, blur, noise Tensor) (Tensor, error) {
	var s float32
	for _, v := range blur.Data {
		s += v
	}
	s /= float32(len(blur.Data))
	out := NewTensor(noise.Shape...)
	for i, v := range noise.Data {
		out.Data[i] = v + s
	}
	return out, nil
}

func (f *fakeNoiseMixBackend) Transform(_ context.Context, blur, prior Tensor) (Tensor, error) {
	out := NewTensor(blur.Shape...)
	for i, v := range blur.Data {
		out.Data[i] = v + 0.01*prior.Data[i%len(prior.Data)]
	}
	return out, nil
}

// fakeBoxBlurBackend is a "local" transformer: a 3x3 box blur per channel,
// edges clamped inside the tile. Its output at a pixel depends only on the
// pixel's 3x3 neighbourhood, so tiled and untiled runs must agree wherever
// that neighbourhood lies inside every tile covering the pixel.
type fakeBoxBlurBackend struct{ info ModelInfo }

func (f *fakeBoxBlurBackend) Name() string    { return "fake-boxblur" }
func (f *fakeBoxBlurBackend) Info() ModelInfo { return f.info }
func (f *fakeBoxBlurBackend) Close() error    { return nil }

func (f *fakeBoxBlurBackend) Prior(_ context.Context, _, noise Tensor) (Tensor, error) {
	return noise, nil
}

func (f *fakeBoxBlurBackend) Transform(_ context.Context, blur, _ Tensor) (Tensor, error) {
	h, w := int(blur.Shape[2]), int(blur.Shape[3])
	out := NewTensor(blur.Shape...)
	for c := 0; c < 3; c++ {
		in := blur.Data[c*h*w : (c+1)*h*w]
		o := out.Data[c*h*w : (c+1)*h*w]
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				var s float32
				for dy := -1; dy <= 1; dy++ {
					for dx := -1; dx <= 1; dx++ {
						yy, xx := min(max(y+dy, 0), h-1), min(max(x+dx, 0), w-1)
						s += in[yy*w+xx]
					}
				}
				o[y*w+x] = s / 9
			}
		}
	}
	return out, nil
}

var errFakeBackend = errors.New("fake backend failure")

// fakeFailingBackend is the identity, except that call number failAt
// (1-based) of Prior or Transform fails, or returns a wrongly shaped tensor.
type fakeFailingBackend struct {
	fakeIdentityBackend
	failPriorAt, failTransformAt int
	badShape                     bool
	cancel                       context.CancelFunc // if set, called after Transform number cancelAt
	cancelAt                     int
}

func (f *fakeFailingBackend) Prior(ctx context.Context, blur, noise Tensor) (Tensor, error) {
	t, _ := f.fakeIdentityBackend.Prior(ctx, blur, noise)
	if f.priors == f.failPriorAt {
		return Tensor{}, errFakeBackend
	}
	return t, nil
}

func (f *fakeFailingBackend) Transform(ctx context.Context, blur, prior Tensor) (Tensor, error) {
	t, _ := f.fakeIdentityBackend.Transform(ctx, blur, prior)
	if f.transfs == f.failTransformAt {
		if f.badShape {
			return NewTensor(1, 3, 8, 8), nil
		}
		return Tensor{}, errFakeBackend
	}
	if f.cancel != nil && f.transfs == f.cancelAt {
		f.cancel()
	}
	return t, nil
}

// fakeConstBackend returns a fixed value everywhere (for clamping tests).
type fakeConstBackend struct {
	fakeIdentityBackend
	vals []float32
}

func (f *fakeConstBackend) Transform(_ context.Context, blur, _ Tensor) (Tensor, error) {
	out := NewTensor(blur.Shape...)
	for i := range out.Data {
		out.Data[i] = f.vals[i%len(f.vals)]
	}
	return out, nil
}

func randImage(w, h int, seed uint64) Image {
	r := rand.New(rand.NewPCG(seed, 7))
	img := Image{W: w, H: h, Pix: make([]float32, 3*w*h)}
	for i := range img.Pix {
		img.Pix[i] = r.Float32()
	}
	return img
}

// fakePerTileConstBackend fills tile number k (1-based call order) with
// vals[(k-1)%len(vals)], so overlaps blend different out-of-range values.
type fakePerTileConstBackend struct {
	fakeIdentityBackend
	vals []float32
}

func (f *fakePerTileConstBackend) Transform(ctx context.Context, blur, prior Tensor) (Tensor, error) {
	f.fakeIdentityBackend.Transform(ctx, blur, prior)
	out := NewTensor(blur.Shape...)
	v := f.vals[(f.transfs-1)%len(f.vals)]
	for i := range out.Data {
		out.Data[i] = v
	}
	return out, nil
}
