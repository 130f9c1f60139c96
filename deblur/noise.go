package deblur

import "math"

// StartingNoise returns the seeded Gaussian starting noise of the reverse
// diffusion, n values. The generator is defined here, not borrowed from a
// library, so that engine_build/noise.py reproduces it bit for bit and the
// PyTorch reference and the Go daemon start from the same noise:
//
//	state_k = seed + (k+1) * 0x9E3779B97F4A7C15          (mod 2^64)
//	r_k     = splitmix64 finaliser of state_k
//	u1 = ((r_{2i} >> 11) + 1) * 2^-53   in (0, 1]
//	u2 =  (r_{2i+1} >> 11)    * 2^-53   in [0, 1)
//	z_{2i}   = sqrt(-2 ln u1) * cos(2 pi u2)
//	z_{2i+1} = sqrt(-2 ln u1) * sin(2 pi u2)
//
// computed in float64 and rounded to float32.
func StartingNoise(seed uint64, n int) []float32 {
	out := make([]float32, n)
	const golden = 0x9E3779B97F4A7C15
	const inv53 = 1.0 / (1 << 53)
	for i := 0; i < n; i += 2 {
		k := uint64(i)
		r1 := splitmix64(seed + (k+1)*golden)
		r2 := splitmix64(seed + (k+2)*golden)
		u1 := float64((r1>>11)+1) * inv53
		u2 := float64(r2>>11) * inv53
		rad := math.Sqrt(-2 * math.Log(u1))
		out[i] = float32(rad * math.Cos(2*math.Pi*u2))
		if i+1 < n {
			out[i+1] = float32(rad * math.Sin(2*math.Pi*u2))
		}
	}
	return out
}

func splitmix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}
