package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// tree builds a fake sysfs/procfs under a temporary root. Files get the
// kernel's formats: one value and a newline; device-tree names end in NUL.
type tree struct {
	t    *testing.T
	root string
}

func newTree(t *testing.T) *tree { return &tree{t: t, root: t.TempDir()} }

func (tr *tree) file(p, content string) {
	tr.t.Helper()
	full := filepath.Join(tr.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o444); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) link(p, target string) {
	tr.t.Helper()
	full := filepath.Join(tr.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) zone(n int, typ, temp string, trips ...[2]string) {
	z := fmt.Sprintf("sys/devices/virtual/thermal/thermal_zone%d", n)
	tr.file(z+"/type", typ+"\n")
	tr.file(z+"/temp", temp+"\n")
	for i, tp := range trips {
		tr.file(fmt.Sprintf("%s/trip_point_%d_type", z, i), tp[0]+"\n")
		tr.file(fmt.Sprintf("%s/trip_point_%d_temp", z, i), tp[1]+"\n")
	}
	tr.link(fmt.Sprintf("sys/class/thermal/thermal_zone%d", n), fmt.Sprintf("../../devices/virtual/thermal/thermal_zone%d", n))
}

// The head of a real Orin AGX /proc/meminfo (L4T 35), NvMap lines included.
const orinMeminfo = `MemTotal:       30536488 kB
MemFree:        25110932 kB
MemAvailable:   27833152 kB
Buffers:           36548 kB
Cached:          2916132 kB
SwapCached:            0 kB
Active:          1146012 kB
Inactive:        3221288 kB
Shmem:             29772 kB
NvMapMemFree:          0 kB
NvMapMemUsed:     462532 kB
CmaTotal:         524288 kB
CmaFree:          524036 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
`

// orinTree is an Orin AGX on L4T 35: the GPU's devfreq class entry links
// to the platform device, whose of_node names it; thermal zones as the
// kernel lists them; INA3221 through hwmon.
func orinTree(t *testing.T) *tree {
	tr := newTree(t)
	dev := "sys/devices/platform/17000000.ga10b"
	tr.file(dev+"/load", "372\n")
	tr.file(dev+"/devfreq/17000000.ga10b/cur_freq", "1300500000\n")
	tr.file("sys/firmware/devicetree/base/gpu@17000000/name", "gpu\x00")
	tr.link(dev+"/of_node", "../../../firmware/devicetree/base/gpu@17000000")
	tr.link(dev+"/devfreq/17000000.ga10b/device", "../../../17000000.ga10b")
	tr.link("sys/class/devfreq/17000000.ga10b", "../../devices/platform/17000000.ga10b/devfreq/17000000.ga10b")
	// Another devfreq device (the NVDLA) that is not the GPU.
	tr.file("sys/devices/platform/15880000.nvdla0/devfreq/15880000.nvdla0/cur_freq", "0\n")
	tr.file("sys/firmware/devicetree/base/nvdla0@15880000/name", "nvdla0\x00")
	tr.link("sys/devices/platform/15880000.nvdla0/of_node", "../../../firmware/devicetree/base/nvdla0@15880000")
	tr.link("sys/devices/platform/15880000.nvdla0/devfreq/15880000.nvdla0/device", "../../../15880000.nvdla0")
	tr.link("sys/class/devfreq/15880000.nvdla0", "../../devices/platform/15880000.nvdla0/devfreq/15880000.nvdla0")

	tr.zone(0, "cpu-thermal", "47218", [2]string{"critical", "104500"})
	tr.zone(1, "gpu-thermal", "45500",
		[2]string{"active", "46000"},    // fan: not a limit
		[2]string{"passive", "99000"},   // software throttle
		[2]string{"critical", "104500"}, // shutdown
		[2]string{"hot", "-274000"})     // disabled: skipped
	tr.zone(2, "cv0-thermal", "44875")
	tr.zone(8, "tj-thermal", "47218", [2]string{"passive", "97000"})
	tr.file("proc/meminfo", orinMeminfo)

	hw := "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
	tr.file(hw+"/name", "ina3221\n")
	tr.file(hw+"/in1_label", "VDD_GPU_SOC\n")
	tr.file(hw+"/in1_input", "5024\n")
	tr.file(hw+"/curr1_input", "1344\n")
	tr.file(hw+"/in2_label", "VDD_CPU_CV\n")
	tr.file(hw+"/in2_input", "5032\n")
	tr.file(hw+"/curr2_input", "480\n")
	tr.file(hw+"/in3_label", "VIN_SYS_5V0\n")
	tr.file(hw+"/in3_input", "5016\n")
	tr.file(hw+"/curr3_input", "1112\n")
	return tr
}

type logRec struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRec) log(level, msg string, kv ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+msg+" "+fmt.Sprint(kv...))
}

func (l *logRec) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestJetsonOrinTree(t *testing.T) {
	tr := orinTree(t)
	lr := &logRec{}
	m, err := Open(Options{Kind: KindJetson, Root: tr.root, Log: lr.log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Name() != KindJetson {
		t.Fatalf("name %q", m.Name())
	}
	r, err := m.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const kib = 1024.0
	checks := []struct {
		name      string
		got, want float64
	}{
		{"GPUUtil (per-mille 372)", r.GPUUtil, 37.2},
		{"TempC", r.TempC, 45.5},
		{"SlowdownC (passive trip)", r.SlowdownC, 99},
		{"ShutdownC (critical trip)", r.ShutdownC, 104.5},
		{"MemTotal", r.MemTotal, 30536488 * kib},
		{"MemFree (MemAvailable)", r.MemFree, 27833152 * kib},
		{"MemUsed", r.MemUsed, (30536488 - 27833152) * kib},
		{"NvMapUsed", r.NvMapUsed, 462532 * kib},
		{"PowerW (VDD_GPU_SOC 5024 mV x 1344 mA)", r.PowerW, 5.024 * 1.344},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if !near(c.got, c.want) {
				t.Errorf("%v, want %v", c.got, c.want)
			}
		})
	}
	if !r.SharedMemory || r.EventsKnown {
		t.Errorf("shared %v events known %v", r.SharedMemory, r.EventsKnown)
	}
	for name, v := range map[string]float64{"MemUtil": r.MemUtil, "OtherUtil": r.OtherUtil,
		"OtherMemUsed": r.OtherMemUsed, "PowerLimitW": r.PowerLimitW} {
		if Known(v) {
			t.Errorf("%s = %v, want unknown on Jetson", name, v)
		}
	}
	if !strings.Contains(r.Device, "gpu-thermal") || !strings.Contains(r.Device, "VDD_GPU_SOC") {
		t.Errorf("device %q", r.Device)
	}

	// Live values change between reads.
	if err := os.Chmod(filepath.Join(tr.root, "sys/devices/platform/17000000.ga10b/load"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tr.root, "sys/devices/platform/17000000.ga10b/load"), []byte("998\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, _ = m.Read(context.Background())
	if !near(r.GPUUtil, 99.8) {
		t.Errorf("second read load %v", r.GPUUtil)
	}
}

// Xavier on L4T 32: no devfreq class links, the GPU at /sys/devices/gpu.0,
// "GPU-therm", INA3221 through the old iio driver, and (here) no nvmap
// line. Missing pieces are unknown, logged once however often Read runs.
func TestJetsonXavierTreeOldLayout(t *testing.T) {
	tr := newTree(t)
	tr.file("sys/devices/gpu.0/load", "0\n")
	tr.zone(0, "AO-therm", "41500")
	tr.zone(1, "CPU-therm", "42000")
	tr.zone(2, "GPU-therm", "40500", [2]string{"critical", "101000"})
	tr.zone(3, "PMIC-Die", "100000")
	tr.file("proc/meminfo", "MemTotal:       15817524 kB\nMemFree:        12000000 kB\nMemAvailable:   13000000 kB\n")
	iio := "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0"
	tr.file(iio+"/rail_name_0", "GPU\n")
	tr.file(iio+"/in_power0_input", "1532\n")
	tr.file(iio+"/rail_name_1", "CPU\n")
	tr.file(iio+"/in_power1_input", "612\n")
	lr := &logRec{}
	m, err := Open(Options{Kind: KindJetson, Root: tr.root, Log: lr.log})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		r, err := m.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r.GPUUtil != 0 || !near(r.TempC, 40.5) || Known(r.SlowdownC) || !near(r.ShutdownC, 101) ||
			!near(r.PowerW, 1.532) || Known(r.NvMapUsed) || !near(r.MemFree, 13000000*1024) {
			t.Fatalf("read %d: %+v", i, r)
		}
	}
	if n := lr.count("NvMapMemUsed"); n != 1 {
		t.Errorf("missing NvMapMemUsed logged %d times, want once:\n%s", n, strings.Join(lr.lines, "\n"))
	}
}

// Orin Nano on L4T 36: the devfreq entry is named 17000000.gpu and has no
// of_node; the only GPU-fed rail is the shared VDD_CPU_GPU_CV.
func TestJetsonOrinNanoGlobFallback(t *testing.T) {
	tr := newTree(t)
	tr.file("sys/devices/platform/bus@0/17000000.gpu/load", "55\n")
	tr.link("sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu/device", "../../../17000000.gpu")
	tr.link("sys/class/devfreq/17000000.gpu", "../../devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu")
	tr.zone(0, "cpu-thermal", "50000")
	tr.zone(5, "tj-thermal", "51250", [2]string{"passive", "99000"}, [2]string{"critical", "104500"})
	tr.file("proc/meminfo", orinMeminfo)
	hw := "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
	for i, l := range []string{"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"} {
		tr.file(fmt.Sprintf("%s/in%d_label", hw, i+1), l+"\n")
		tr.file(fmt.Sprintf("%s/in%d_input", hw, i+1), "5000\n")
		tr.file(fmt.Sprintf("%s/curr%d_input", hw, i+1), fmt.Sprint(100*(i+1))+"\n")
	}
	m, err := Open(Options{Kind: KindJetson, Root: tr.root})
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// No GPU zone: the junction zone (which governs throttling) stands in.
	if !near(r.GPUUtil, 5.5) || !near(r.TempC, 51.25) || !near(r.SlowdownC, 99) || !near(r.PowerW, 1.0) {
		t.Errorf("%+v", r)
	}
	if !strings.Contains(r.Device, "tj-thermal") || !strings.Contains(r.Device, "VDD_CPU_GPU_CV") {
		t.Errorf("device %q", r.Device)
	}
}

func TestJetsonMissingAndBroken(t *testing.T) {
	// Not a Jetson: an explicit request says so.
	_, err := Open(Options{Kind: KindJetson, Root: t.TempDir()})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not a Jetson") {
		t.Errorf("got %v", err)
	}
	// The GPU node vanishes after open (driver unbound): Read fails as a
	// whole, with what it could still read.
	tr := orinTree(t)
	m, err := Open(Options{Kind: KindJetson, Root: tr.root})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(tr.root, "sys/devices/platform/17000000.ga10b")); err != nil {
		t.Fatal(err)
	}
	r, err := m.Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "load") {
		t.Errorf("read after the GPU vanished: %v", err)
	}
	if Known(r.GPUUtil) || !Known(r.TempC) {
		t.Errorf("partial readings %+v", r)
	}
	// An offline thermal zone reads as an error: temperature unknown.
	tr = orinTree(t)
	lr := &logRec{}
	m, _ = Open(Options{Kind: KindJetson, Root: tr.root, Log: lr.log})
	zt := filepath.Join(tr.root, "sys/devices/virtual/thermal/thermal_zone1/temp")
	os.Chmod(zt, 0o644)
	os.WriteFile(zt, []byte("-256000\n"), 0o644)
	for i := 0; i < 2; i++ {
		if r, err := m.Read(context.Background()); err != nil || Known(r.TempC) {
			t.Errorf("offline zone: %v %v", r.TempC, err)
		}
	}
	if lr.count("thermal zone unreadable") != 1 {
		t.Errorf("want one log line: %q", lr.lines)
	}
}

func TestReadMeminfoFormats(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(p, []byte(orinMeminfo+"garbage line\nDirectMap4k:  x kB\n"), 0o644)
	mi, err := readMeminfo(p)
	if err != nil {
		t.Fatal(err)
	}
	if mi["HugePages_Total"] != 0 || mi["Hugepagesize"] != 2048*1024 || mi["NvMapMemUsed"] != 462532*1024 {
		t.Errorf("%v", mi)
	}
	if _, ok := mi["DirectMap4k"]; ok {
		t.Error("unparsable value kept")
	}
}
