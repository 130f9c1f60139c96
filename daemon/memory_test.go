package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hidiffd/imageio"
	"hidiffd/imageio/metatest"
)

// TestFrameOverTheBudgetFails: a frame whose estimate (from its header)
// cannot fit the memory budget even alone goes to failed/ before a pixel
// is decoded, with the estimate and the budget in its reason; the daemon
// goes on with the next frame.
func TestFrameOverTheBudgetFails(t *testing.T) {
	in := start(t, setup{toml: "[limits]\nmemory_mib = 1024\n"})
	in.waitReady()
	in.drop("huge.png", metatest.ZeroPNG(6000, 6000, 8)) // 36 MP: 36M x 32 bytes > 1 GiB
	in.drop("small.jpg", testJPEG(t, 32, 32))
	in.eventually(10*time.Second, "huge.png failed, small.jpg done", func() bool {
		return in.has("failed", "huge.png.error.json") && in.has("done", "small.jpg")
	})
	data, _ := os.ReadFile(filepath.Join(in.dir("failed"), "huge.png.error.json"))
	var rec struct{ Stage, Reason string }
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"memory budget", "6000x6000 8-bit PNG", "32 bytes per pixel", "limits.memory_mib = 1024", "MiB"} {
		if !strings.Contains(rec.Reason, want) {
			t.Errorf("reason lacks %q: %s", want, rec.Reason)
		}
	}
	if rec.Stage != "probe" {
		t.Errorf("stage %q, want probe", rec.Stage)
	}
	in.stop()
}

// TestFrameCost pins the estimate: file + pixels x (decoder's bytes + 28),
// the decoder's share twice for an interlaced PNG, plus the network's
// per-pixel memory when the frame is not tiled.
func TestFrameCost(t *testing.T) {
	png16 := imageio.Info{Format: "png", Width: 7000, Height: 7000, BitDepth: 16, SampleBytes: 8, Size: 300_000}
	if got, want := frameCost(png16, 384), int64(300_000+49_000_000*36); got != want {
		t.Errorf("16-bit PNG: %d, want %d", got, want)
	}
	png16.Interlaced = true
	if got, want := frameCost(png16, 384), int64(300_000+49_000_000*44); got != want {
		t.Errorf("interlaced: %d, want %d", got, want)
	}
	jpg := imageio.Info{Format: "jpeg", Width: 1280, Height: 720, BitDepth: 8, SampleBytes: 3, Size: 200_000}
	if got, want := frameCost(jpg, 0), int64(200_000+921_600*(31+untiledNetworkBytesPerPixel)); got != want {
		t.Errorf("untiled JPEG: %d, want %d", got, want)
	}
}
