package gpu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// jetsonMonitor reads an NVIDIA Jetson's integrated GPU from sysfs and
// procfs, where NVML is absent or answers NOT_SUPPORTED:
//
//   - load: the GPU devfreq device's "load" file, busy time in per-mille
//     ("372" = 37.2 %), e.g. /sys/devices/platform/17000000.ga10b/load
//     (Orin, L4T 35), /sys/devices/platform/bus@0/17000000.gpu/load (Orin,
//     L4T 36), /sys/devices/gpu.0/load (Xavier, TX2, Nano); found through
//     /sys/class/devfreq/*/device/of_node/name like jetson-stats does;
//   - temperature: the thermal zone typed "gpu-thermal" (Orin) or
//     "GPU-therm" (Xavier, TX2, Nano), in milli-degrees; its passive trip
//     point is where the kernel starts to throttle, its critical one where
//     it shuts down;
//   - memory: shared with the CPU, so /proc/meminfo's MemTotal and
//     MemAvailable, and NvMapMemUsed (what the GPU driver has handed out);
//   - power: the INA3221 rail that feeds the GPU, from the hwmon driver
//     (in*_label, in*_input mV, curr*_input mA; L4T 32.5+ and 35+) or the
//     older iio driver (rail_name_*, in_power*_input mW; L4T 32).
type jetsonMonitor struct {
	root     string
	gpuName  string // of_node name: ga10b, gv11b, gp10b, gpu...
	loadPath string

	zoneType             string // "" when no GPU thermal zone was found
	zoneTemp             string
	slowdownC, shutdownC float64

	power      func() (float64, error) // nil: no GPU rail found
	powerLabel string

	log *onceLog
}

// tegraGPUNames are the device-tree node names of Jetson GPUs (gk20a TK1,
// gm20b TX1/Nano, gp10b TX2, gv11b Xavier, ga10b Orin, gb10b Thor) and the
// generic "gpu" newer kernels use.
var tegraGPUNames = map[string]bool{"gk20a": true, "gm20b": true, "gp10b": true, "gv11b": true,
	"ga10b": true, "gb10b": true, "gpu": true}

func openJetson(opts Options) (*jetsonMonitor, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	m := &jetsonMonitor{root: root, log: &onceLog{log: opts.Log}, slowdownC: Unknown, shutdownC: Unknown}
	m.gpuName, m.loadPath = findGPULoad(root)
	if m.loadPath == "" {
		return nil, fmt.Errorf("no Tegra GPU load file under %s (not a Jetson)", filepath.Join(root, "sys"))
	}
	m.findThermalZone()
	m.findPowerRail()
	return m, nil
}

func (m *jetsonMonitor) Name() string { return KindJetson }

func (m *jetsonMonitor) path(p string) string { return filepath.Join(m.root, p) }

// findGPULoad returns the GPU's name and the path of its load file.
func findGPULoad(root string) (name, load string) {
	at := func(p string) string { return filepath.Join(root, p) }
	// The devfreq device whose device-tree node is a Tegra GPU. The name
	// file holds a NUL-terminated device-tree string.
	devs, _ := filepath.Glob(at("sys/class/devfreq/*"))
	sort.Strings(devs)
	for _, d := range devs {
		b, err := os.ReadFile(filepath.Join(d, "device/of_node/name"))
		if err != nil {
			continue
		}
		n := strings.TrimSpace(string(bytes.TrimRight(b, "\x00\n")))
		if !tegraGPUNames[n] {
			continue
		}
		if l := filepath.Join(d, "device/load"); isFile(l) {
			return n, l
		}
	}
	// Kernels without of_node links: the devfreq name carries the node's.
	for _, pat := range []string{"*ga10b*", "*gv11b*", "*gp10b*", "*gm20b*", "*gb10b*", "*gpu*"} {
		ls, _ := filepath.Glob(at("sys/class/devfreq/" + pat + "/device/load"))
		sort.Strings(ls)
		if len(ls) > 0 {
			return pat[1 : len(pat)-1], ls[0]
		}
	}
	// Fixed places, newest first.
	for _, p := range []string{
		"sys/devices/platform/bus@0/17000000.gpu/load",    // Orin, L4T 36
		"sys/devices/platform/17000000.ga10b/load",        // Orin, L4T 35
		"sys/devices/platform/gpu.0/load",                 // Xavier, L4T 32 (platform bus)
		"sys/devices/gpu.0/load",                          // Xavier, TX2, Nano, L4T 32
		"sys/devices/17000000.gv11b/load",                 // Xavier
		"sys/devices/platform/17000000.gv11b/load",        // Xavier
		"sys/devices/57000000.gpu/load",                   // Nano, TX1
		"sys/devices/platform/host1x/57000000.gpu/load",   // Nano
		"sys/devices/platform/host1x/17000000.gv11b/load", // Xavier
	} {
		if isFile(at(p)) {
			return "gpu", at(p)
		}
	}
	return "", ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// findThermalZone picks the GPU's thermal zone and reads its trip points.
// Without one it falls back to "tj-thermal" (Orin's junction maximum, the
// zone that governs its throttling).
func (m *jetsonMonitor) findThermalZone() {
	zones, _ := filepath.Glob(m.path("sys/class/thermal/thermal_zone*"))
	sort.Slice(zones, func(i, j int) bool { return zoneNum(zones[i]) < zoneNum(zones[j]) })
	best, bestRank := "", 0
	for _, z := range zones {
		b, err := os.ReadFile(filepath.Join(z, "type"))
		if err != nil {
			continue
		}
		t := strings.TrimSpace(string(b))
		lt := strings.ToLower(t)
		rank := 0
		switch {
		case lt == "gpu-thermal" || lt == "gpu-therm":
			rank = 3
		case strings.Contains(lt, "gpu"):
			rank = 2
		case lt == "tj-thermal":
			rank = 1
		}
		if rank > bestRank {
			best, bestRank, m.zoneType = z, rank, t
		}
	}
	if best == "" {
		m.log.once("thermal", "info", "gpu: no GPU thermal zone under /sys/class/thermal; temperature unknown")
		return
	}
	m.zoneTemp = filepath.Join(best, "temp")
	// Trip points: "passive" (and "hot") is where the kernel throttles,
	// "critical" where it powers off. "active" trips run the fan; not a
	// limit. Implausible values (disabled trips are often written as a
	// huge or negative number) are skipped.
	trips, _ := filepath.Glob(filepath.Join(best, "trip_point_*_type"))
	for _, tp := range trips {
		kind, err := os.ReadFile(tp)
		if err != nil {
			continue
		}
		c, err := readMilli(strings.TrimSuffix(tp, "_type") + "_temp")
		if err != nil || c < 20 || c > 200 {
			continue
		}
		switch strings.TrimSpace(string(kind)) {
		case "passive", "hot":
			if !Known(m.slowdownC) || c < m.slowdownC {
				m.slowdownC = c
			}
		case "critical":
			if !Known(m.shutdownC) || c < m.shutdownC {
				m.shutdownC = c
			}
		}
	}
}

func zoneNum(p string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), "thermal_zone"))
	return n
}

// readInt reads a sysfs file holding one integer.
func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readMilli reads a milli-unit integer (milli-degrees) as units.
func readMilli(p string) (float64, error) {
	v, err := readInt(p)
	return float64(v) / 1000, err
}

// gpuRail ranks an INA3221 rail label: 2 for a rail that feeds only the GPU,
// 1 for a shared rail that includes it (VDD_GPU_SOC on Orin AGX,
// VDD_CPU_GPU_CV on Orin NX/Nano and Xavier NX), 0 otherwise.
func gpuRail(label string) int {
	l := strings.ToUpper(strings.TrimSpace(label))
	switch l {
	case "GPU", "VDD_GPU", "POM_5V_GPU", "VDD_SYS_GPU", "VDD_GPU_SOC_IN":
		return 2
	}
	if strings.Contains(l, "GPU") {
		return 1
	}
	return 0
}

// findPowerRail looks for the GPU's INA3221 rail, hwmon first.
func (m *jetsonMonitor) findPowerRail() {
	bestRank := 0
	labels, _ := filepath.Glob(m.path("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_label"))
	sort.Strings(labels)
	for _, lp := range labels {
		b, err := os.ReadFile(lp)
		if err != nil {
			continue
		}
		rank := gpuRail(string(b))
		if rank <= bestRank {
			continue
		}
		dir := filepath.Dir(lp)
		ch := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(lp), "in"), "_label")
		volt, curr := filepath.Join(dir, "in"+ch+"_input"), filepath.Join(dir, "curr"+ch+"_input")
		if !isFile(volt) || !isFile(curr) {
			continue
		}
		bestRank, m.powerLabel = rank, strings.TrimSpace(string(b))
		m.power = func() (float64, error) {
			mv, err := readInt(volt)
			if err != nil {
				return Unknown, err
			}
			ma, err := readInt(curr)
			if err != nil {
				return Unknown, err
			}
			return float64(mv) * float64(ma) / 1e6, nil // mV * mA = µW
		}
	}
	if m.power != nil {
		return
	}
	names, _ := filepath.Glob(m.path("sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_*"))
	sort.Strings(names)
	for _, np := range names {
		b, err := os.ReadFile(np)
		if err != nil {
			continue
		}
		rank := gpuRail(string(b))
		if rank <= bestRank {
			continue
		}
		ch := strings.TrimPrefix(filepath.Base(np), "rail_name_")
		pw := filepath.Join(filepath.Dir(np), "in_power"+ch+"_input")
		if !isFile(pw) {
			continue
		}
		bestRank, m.powerLabel = rank, strings.TrimSpace(string(b))
		m.power = func() (float64, error) {
			v, err := readInt(pw)
			return float64(v) / 1000, err // mW
		}
	}
	if m.power == nil {
		m.log.once("power", "info", "gpu: no INA3221 rail feeding the GPU found; power unknown")
	}
}

// Device describes what is read, for logs and doctor.
func (m *jetsonMonitor) describe() string {
	s := "Jetson " + m.gpuName
	if m.zoneType != "" {
		s += ", thermal zone " + m.zoneType
	}
	if m.powerLabel != "" {
		s += ", power rail " + m.powerLabel
	}
	return s
}

func (m *jetsonMonitor) Read(ctx context.Context) (Readings, error) {
	r := Empty(time.Now())
	r.Device = m.describe()
	r.SharedMemory = true
	if err := ctx.Err(); err != nil {
		return r, err
	}
	var failed []string
	if v, err := readInt(m.loadPath); err == nil {
		r.GPUUtil = float64(v) / 10 // per-mille
	} else {
		// The GPU node vanishing is the Jetson equivalent of NVML's
		// GPU_IS_LOST: the sample as a whole is not to be trusted.
		failed = append(failed, "load: "+err.Error())
	}
	if m.zoneTemp != "" {
		// Offline zones read as an error or a value far below zero.
		if c, err := readMilli(m.zoneTemp); err == nil && c > -40 {
			r.TempC = c
		} else {
			m.log.once("temp", "info", "gpu: thermal zone unreadable; temperature unknown", "zone", m.zoneType)
		}
	}
	r.SlowdownC, r.ShutdownC = m.slowdownC, m.shutdownC

	mi, err := readMeminfo(m.path("proc/meminfo"))
	if err != nil {
		failed = append(failed, "meminfo: "+err.Error())
	}
	if t, ok := mi["MemTotal"]; ok {
		r.MemTotal = t
		if a, ok := mi["MemAvailable"]; ok {
			r.MemFree, r.MemUsed = a, t-a
		}
	}
	if n, ok := mi["NvMapMemUsed"]; ok {
		r.NvMapUsed = n
	} else if err == nil {
		m.log.once("nvmap", "info", "gpu: /proc/meminfo has no NvMapMemUsed; GPU driver memory unknown")
	}

	if m.power != nil {
		if w, err := m.power(); err == nil {
			r.PowerW = w
		} else {
			m.log.once("power/read", "warn", "gpu: INA3221 rail unreadable; power unknown", "rail", m.powerLabel, "error", err.Error())
		}
	}
	if len(failed) > 0 {
		return r, errors.New("gpu (jetson): " + strings.Join(failed, "; "))
	}
	return r, nil
}

// readMeminfo parses /proc/meminfo ("MemAvailable:    1234 kB") into bytes.
func readMeminfo(p string) (map[string]float64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]float64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		key, rest, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" { // the kernel's "kB" is KiB
			v *= 1024
		}
		out[key] = v
	}
	return out, s.Err()
}

func (m *jetsonMonitor) Close() error { return nil }
