package deblur

import "testing"

// The same values are asserted by engine_build/tests/test_noise.py: the Go
// daemon and the PyTorch reference must start from identical noise.
func TestStartingNoiseMatchesPython(t *testing.T) {
	want := []float32{-0.45275774598121643, 0.20776604115962982, 2.6506059169769287, -0.4904228150844574, -0.9886041283607483}
	got := StartingNoise(0, 5)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("StartingNoise(0)[%d] = %.9g, Python gives %.9g", i, got[i], want[i])
		}
	}
	big := StartingNoise(12345, 4096)
	var sum, sq float64
	for _, v := range big {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean, variance := sum/4096, sq/4096-(sum/4096)*(sum/4096)
	if mean < -0.05 || mean > 0.05 || variance < 0.9 || variance > 1.1 {
		t.Fatalf("noise is not standard normal: mean %.3f variance %.3f", mean, variance)
	}
	if a, b := StartingNoise(1, 8), StartingNoise(2, 8); a[0] == b[0] {
		t.Fatal("different seeds gave the same noise")
	}
}
