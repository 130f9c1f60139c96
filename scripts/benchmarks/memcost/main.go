// Command memcost measures what limits.memory_mib has to cover (issue 12,
// D4), on the real hidiffd binary: the peak RSS of a daemon that processes
// one frame, read from the kernel (getrusage of the child), against one
// that processes none. Not a test: the numbers are for the README and the
// constants in daemon/memory.go.
//
//	go run ./scripts/benchmarks/memcost                       # frame path, tiny network
//	go run ./scripts/benchmarks/memcost -model build/models/s # + the s model's own memory
//
// With the default tiny ONNX graph (hidiffd/internal/tinyonnx) the network
// costs nothing, so the slope of peak RSS against pixels is the frame
// path's cost per megapixel, per input kind. It is measured twice: as the
// daemon runs (its Go soft memory limit follows the frames' estimates, so
// garbage may fill the process up to fixed + estimate + 64 MiB: this is
// what the budget sees), and with GOGC=5 and no limit, which keeps the heap
// near what is live: the real need, which the estimate must not be below.
// With -model it also measures the model's fixed memory at model.tile
// (default 384) and, with -untiled, the network's memory per megapixel at
// model.tile = 0.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"hidiffd/internal/tinyonnx"
)

func main() {
	bin := flag.String("bin", "", "hidiffd binary (default: build one)")
	model := flag.String("model", "", "model folder (default: a tiny ONNX graph: the frame path alone)")
	ortLib := flag.String("ort", "", "libonnxruntime.so.1 (default: third_party/onnxruntime)")
	tile := flag.Int("tile", 384, "model.tile")
	untiled := flag.Bool("untiled", false, "with -model: also measure model.tile = 0 at 640x360 and 1280x720")
	budget := flag.Int("budget", 0, "limits.memory_mib for the runs (0: the default)")
	flag.Parse()

	tmp, err := os.MkdirTemp("", "memcost-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if *ortLib == "" {
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
		*ortLib, _ = filepath.Abs(filepath.Join("third_party", "onnxruntime", "linux-"+arch, "libonnxruntime.so.1"))
	}
	if *bin == "" {
		*bin = filepath.Join(tmp, "hidiffd")
		if out, err := exec.Command("go", "build", "-o", *bin, "./cmd/hidiffd").CombinedOutput(); err != nil {
			log.Fatalf("go build: %v\n%s", err, out)
		}
	}
	tiny := *model == ""
	if tiny {
		*model = filepath.Join(tmp, "tiny")
		os.Mkdir(*model, 0o755)
		if err := tinyonnx.WriteModel(*model, nil); err != nil {
			log.Fatal(err)
		}
	}
	*model, _ = filepath.Abs(*model)
	r := runner{bin: *bin, model: *model, ort: *ortLib, tmp: tmp, budget: *budget}

	base := r.peak(*tile, "", nil)
	fmt.Printf("model %s, model.tile %d\n", *model, *tile)
	fmt.Printf("no frame: peak RSS %.0f MiB (the model and runtime)\n", mb(base))
	if !tiny {
		small := r.peak(*tile, "warm.jpg", encodeJPEG(noise(320, 240)))
		fmt.Printf("one 320x240 JPEG: peak RSS %.0f MiB (+%.0f MiB: the network's working memory at this tile)\n",
			mb(small), mb(small-base))
	}
	if *untiled {
		a := r.peak(0, "a.jpg", encodeJPEG(noise(640, 360)))
		b := r.peak(0, "b.jpg", encodeJPEG(noise(1280, 720)))
		per := float64(b-a) / float64(1280*720-640*360)
		fmt.Printf("model.tile = 0: 640x360 %.0f MiB, 1280x720 %.0f MiB: %.0f bytes per pixel (%.0f MB per megapixel)\n",
			mb(a), mb(b), per, per)
		return
	}

	kinds := []struct {
		name string
		file func(w, h int) []byte
	}{
		{"8-bit JPEG", func(w, h int) []byte { return encodeJPEG(noise(w, h)) }},
		{"8-bit PNG", func(w, h int) []byte { return encodePNG(noise(w, h)) }},
		{"16-bit PNG", func(w, h int) []byte { return encodePNG(noise16(w, h)) }},
	}
	sizes := [][2]int{{2000, 1500}, {4000, 3000}}
	fmt.Printf("\n| input | file bytes per pixel | peak %dx%d | peak %dx%d | MB per megapixel | live only (GOGC=5): MB per megapixel |\n"+
		"| --- | ---: | ---: | ---: | ---: | ---: |\n", sizes[0][0], sizes[0][1], sizes[1][0], sizes[1][1])
	for _, k := range kinds {
		var peaks, live []int64
		var fileBPP float64
		for _, s := range sizes {
			data := k.file(s[0], s[1])
			fileBPP = float64(len(data)) / float64(s[0]*s[1])
			r.env = nil
			peaks = append(peaks, r.peak(*tile, "f"+ext(k.name), data))
			r.env = []string{"GOGC=5", "GOMEMLIMIT=1TiB"}
			live = append(live, r.peak(*tile, "f"+ext(k.name), data))
		}
		r.env = nil
		p0 := float64(sizes[0][0] * sizes[0][1])
		p1 := float64(sizes[1][0] * sizes[1][1])
		slope := float64(peaks[1]-peaks[0]) / (p1 - p0)
		liveSlope := float64(live[1]-live[0]) / (p1 - p0)
		fmt.Printf("| %s | %.1f | %.0f MiB | %.0f MiB | %.1f | %.1f |\n", k.name, fileBPP, mb(peaks[0]), mb(peaks[1]), slope, liveSlope)
	}
}

func ext(kind string) string {
	if strings.Contains(kind, "JPEG") {
		return ".jpg"
	}
	return ".png"
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

type runner struct {
	bin, model, ort, tmp string
	budget               int
	n                    int
	env                  []string // extra environment of the daemon
}

// peak runs the daemon on a fresh spool, drops the file (if any), waits
// until it is done, stops the daemon and returns its peak RSS in bytes.
func (r *runner) peak(tile int, name string, data []byte) int64 {
	r.n++
	dir := filepath.Join(r.tmp, fmt.Sprintf("run%d", r.n))
	os.MkdirAll(dir, 0o755)
	defer os.RemoveAll(dir)
	limits := ""
	if r.budget > 0 {
		limits = fmt.Sprintf("\n[limits]\nmemory_mib = %d\n", r.budget)
	}
	cfg := fmt.Sprintf(`[spool]
root = "spool"
settle = "100ms"
rescan = "1s"
max_pixels = 100000000
[model]
dir = %q
tile = %d
[backend]
kind = "onnxruntime"
onnxruntime_library = %q
[http]
listen = ""
[log]
format = "json"
%s`, r.model, tile, r.ort, limits)
	cfgPath := filepath.Join(dir, "c.toml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	var logs bytes.Buffer
	cmd := exec.Command(r.bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="), r.env...)
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	wait := func(what string, cond func() bool) {
		for deadline := time.Now().Add(30 * time.Minute); !cond(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				log.Fatalf("timed out waiting for %s\n%s", what, logs.String())
			}
		}
	}
	spool := filepath.Join(dir, "spool")
	wait("ready", func() bool { return strings.Contains(logs.String(), `"message":"ready"`) })
	if name != "" {
		tmp := filepath.Join(spool, "inbox", "."+name)
		os.WriteFile(tmp, data, 0o644)
		os.Rename(tmp, filepath.Join(spool, "inbox", name))
		wait(name+" done", func() bool {
			_, e1 := os.Stat(filepath.Join(spool, "done", name))
			_, e2 := os.Stat(filepath.Join(spool, "failed", name))
			return e1 == nil || e2 == nil
		})
		if _, err := os.Stat(filepath.Join(spool, "failed", name)); err == nil {
			rec, _ := os.ReadFile(filepath.Join(spool, "failed", name+".error.json"))
			log.Fatalf("%s failed: %s", name, rec)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
}

// noise and noise16 are random images (incompressible enough that the file
// size is realistic for a photo).
func noise(w, h int) image.Image {
	rng := rand.New(rand.NewSource(1))
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.Intn(256))
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	return m
}

func noise16(w, h int) image.Image {
	rng := rand.New(rand.NewSource(1))
	m := image.NewRGBA64(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetRGBA64(x, y, color.RGBA64{uint16(rng.Intn(65536)), uint16(rng.Intn(65536)), uint16(rng.Intn(65536)), 65535})
		}
	}
	return m
}

func encodeJPEG(m image.Image) []byte {
	var b bytes.Buffer
	jpeg.Encode(&b, m, &jpeg.Options{Quality: 90})
	return b.Bytes()
}

func encodePNG(m image.Image) []byte {
	var b bytes.Buffer
	(&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, m)
	return b.Bytes()
}
