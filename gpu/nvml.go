//go:build cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlMonitor reads one device through NVML. go-nvml dlopens
// libnvidia-ml.so.1 at Init, so the binary builds and starts on machines
// without the driver; Init then fails with ERROR_LIBRARY_NOT_FOUND.
type nvmlMonitor struct {
	lib    nvml.Interface
	dev    nvml.Device
	index  int
	device string // product name
	pid    uint32
	log    *onceLog

	// Symbols that not every driver exports. go-nvml binds lazily, so
	// calling a function the library lacks would abort the process: each
	// is looked up once at open.
	hasEvents   bool // nvmlDeviceGetCurrentClocksEventReasons (driver >= 535)
	hasThrottle bool // nvmlDeviceGetCurrentClocksThrottleReasons (older name)
	hasMemV2    bool // nvmlDeviceGetMemoryInfo_v2: Used without the driver's reservation
	hasTemp     bool // nvmlDeviceGetTemperature (deprecated; may be dropped)
	hasTempV    bool // nvmlDeviceGetTemperatureV (its replacement)

	// The GPU's own thresholds do not change while it runs: read once.
	slowdownC, shutdownC float64

	lastUtilTS uint64 // newest per-process utilisation sample seen (µs)
	closed     bool
}

func openNVML(opts Options) (*nvmlMonitor, error) {
	var lib nvml.Interface
	if opts.NVMLLibrary != "" {
		lib = nvml.New(nvml.WithLibraryPath(opts.NVMLLibrary))
	} else {
		lib = nvml.New()
	}
	return newNVML(lib, opts)
}

// newNVML opens device opts.Device on lib (a real library or, in tests,
// go-nvml's mock).
func newNVML(lib nvml.Interface, opts Options) (m *nvmlMonitor, err error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			name := opts.NVMLLibrary
			if name == "" {
				name = "libnvidia-ml.so.1"
			}
			return nil, fmt.Errorf("%s not found (no NVIDIA driver installed, or not visible here)", name)
		}
		return nil, fmt.Errorf("nvmlInit: %v", ret)
	}
	defer func() {
		if err != nil {
			lib.Shutdown()
		}
	}()
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvmlDeviceGetCount: %v", ret)
	}
	if n == 0 {
		return nil, errors.New("NVML found no GPU")
	}
	if opts.Device < 0 || opts.Device >= n {
		return nil, fmt.Errorf("gpu.device %d: NVML sees %d GPU(s), indices 0..%d", opts.Device, n, n-1)
	}
	dev, ret := lib.DeviceGetHandleByIndex(opts.Device)
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("GPU %d: nvmlDeviceGetHandleByIndex: %v", opts.Device, ret)
	}
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		name = fmt.Sprintf("GPU %d", opts.Device)
	}
	// Jetson's NVML (where present) answers NOT_SUPPORTED for memory: no
	// use to the policy, so "auto" goes on to the sysfs reader.
	if _, ret := dev.GetMemoryInfo(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%s: nvmlDeviceGetMemoryInfo: %v", name, ret)
	}
	m = &nvmlMonitor{lib: lib, dev: dev, index: opts.Device, device: name, pid: uint32(opts.PID),
		log: &onceLog{log: opts.Log}, slowdownC: Unknown, shutdownC: Unknown}
	has := func(sym string) bool { return lib.Extensions().LookupSymbol(sym) == nil }
	m.hasEvents = has("nvmlDeviceGetCurrentClocksEventReasons")
	m.hasThrottle = has("nvmlDeviceGetCurrentClocksThrottleReasons")
	m.hasMemV2 = has("nvmlDeviceGetMemoryInfo_v2")
	m.hasTemp = has("nvmlDeviceGetTemperature")
	m.hasTempV = has("nvmlDeviceGetTemperatureV")
	if t, ret := dev.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SLOWDOWN); m.ok("slowdown_threshold", ret) {
		m.slowdownC = float64(t)
	}
	if t, ret := dev.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SHUTDOWN); m.ok("shutdown_threshold", ret) {
		m.shutdownC = float64(t)
	}
	return m, nil
}

func (m *nvmlMonitor) Name() string { return KindNVML }

// lostErr picks the returns after which no reading of this device can be
// trusted: the GPU fell off the bus, or the driver went away.
func lostErr(ret nvml.Return) bool {
	switch ret {
	case nvml.ERROR_GPU_IS_LOST, nvml.ERROR_UNINITIALIZED, nvml.ERROR_DRIVER_NOT_LOADED,
		nvml.ERROR_RESET_REQUIRED, nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return true
	}
	return false
}

// ok reports success; anything else is logged once per field and reason
// and the field stays Unknown.
func (m *nvmlMonitor) ok(field string, ret nvml.Return) bool {
	switch {
	case ret == nvml.SUCCESS:
		return true
	case ret == nvml.ERROR_NOT_SUPPORTED:
		m.log.once(field+"/unsupported", "info", "gpu: field not supported by this GPU; reported as unknown",
			"field", field, "device", m.device)
	case ret == nvml.ERROR_NO_PERMISSION:
		m.log.once(field+"/permission", "info", "gpu: no permission to read field; reported as unknown",
			"field", field, "device", m.device)
	default:
		m.log.once(field+"/"+ret.String(), "warn", "gpu: field read failed; reported as unknown",
			"field", field, "device", m.device, "error", ret.String())
	}
	return false
}

func (m *nvmlMonitor) Read(ctx context.Context) (Readings, error) {
	r := Empty(time.Now())
	r.Device = m.device
	if m.closed {
		return r, errors.New("gpu: nvml monitor closed")
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	var lost []string
	check := func(field string, ret nvml.Return) bool {
		if lostErr(ret) {
			lost = append(lost, field+": "+ret.String())
			return false
		}
		return m.ok(field, ret)
	}

	// Memory. v2 reports Used without the driver's reserved memory, which
	// is what processes can actually be charged for; Free is the same.
	memDone := false
	if m.hasMemV2 {
		mem, ret := m.dev.GetMemoryInfo_v2()
		if ret == nvml.SUCCESS {
			r.MemTotal, r.MemFree, r.MemUsed = float64(mem.Total), float64(mem.Free), float64(mem.Used)
			memDone = true
		} else if !lostErr(ret) {
			// Some drivers export the symbol but reject the struct
			// version; v1 works everywhere.
			m.log.once("memory_v2", "debug", "gpu: nvmlDeviceGetMemoryInfo_v2 failed; using v1", "error", ret.String())
			m.hasMemV2 = false
		}
	}
	if !memDone {
		if mem, ret := m.dev.GetMemoryInfo(); check("memory", ret) {
			r.MemTotal, r.MemFree, r.MemUsed = float64(mem.Total), float64(mem.Free), float64(mem.Used)
		}
	}

	switch {
	case m.hasTemp:
		if t, ret := m.dev.GetTemperature(nvml.TEMPERATURE_GPU); check("temperature", ret) {
			r.TempC = float64(t)
		}
	case m.hasTempV:
		if t, ret := m.dev.GetTemperatureV().V1(); check("temperature", ret) {
			r.TempC = float64(t.Temperature)
		}
	}
	r.SlowdownC, r.ShutdownC = m.slowdownC, m.shutdownC

	if u, ret := m.dev.GetUtilizationRates(); check("utilization", ret) {
		r.GPUUtil, r.MemUtil = float64(u.Gpu), float64(u.Memory)
	}

	var reasons uint64
	ret := nvml.ERROR_NOT_SUPPORTED
	switch {
	case m.hasEvents:
		reasons, ret = m.dev.GetCurrentClocksEventReasons()
	case m.hasThrottle:
		reasons, ret = m.dev.GetCurrentClocksThrottleReasons()
	}
	if check("clock_event_reasons", ret) {
		r.Events, r.EventsKnown = clockEvents(reasons), true
	}

	if p, ret := m.dev.GetPowerUsage(); check("power", ret) {
		r.PowerW = float64(p) / 1000 // mW
	}
	if p, ret := m.dev.GetEnforcedPowerLimit(); check("power_limit", ret) {
		r.PowerLimitW = float64(p) / 1000
	}

	if procs, ret := m.dev.GetComputeRunningProcesses(); check("processes", ret) {
		r.OtherMemUsed = m.otherMemory(procs)
	}
	r.OtherUtil = m.otherUtil(check)

	if len(lost) > 0 {
		return r, fmt.Errorf("gpu %d (%s): %v", m.index, m.device, lost)
	}
	return r, nil
}

// otherMemory sums the memory of every compute process but ours. NVML
// reports NVML_VALUE_NOT_AVAILABLE for a process whose use it cannot see
// (some containers, no permission); if it sees none of the others' use, the
// sum is unknown rather than a false zero.
func (m *nvmlMonitor) otherMemory(procs []nvml.ProcessInfo) float64 {
	sum, seen, hidden := 0.0, 0, 0
	for _, p := range procs {
		if p.Pid == m.pid {
			continue
		}
		if p.UsedGpuMemory == math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE as unsigned
			hidden++
			continue
		}
		sum += float64(p.UsedGpuMemory)
		seen++
	}
	if hidden > 0 && seen == 0 {
		m.log.once("processes/hidden", "info", "gpu: other processes' memory use not visible; reported as unknown", "device", m.device)
		return Unknown
	}
	return sum
}

// otherUtil sums the newest SM-utilisation sample of every process but ours
// since the previous call. NVML keeps a short ring of per-process samples;
// NOT_FOUND means none arrived, i.e. nobody ran a kernel.
func (m *nvmlMonitor) otherUtil(check func(string, nvml.Return) bool) float64 {
	samples, ret := m.dev.GetProcessUtilization(m.lastUtilTS)
	if ret == nvml.ERROR_NOT_FOUND {
		return 0
	}
	if !check("process_utilization", ret) {
		return Unknown
	}
	latest := map[uint32]nvml.ProcessUtilizationSample{}
	for _, s := range samples {
		if s.TimeStamp > m.lastUtilTS {
			m.lastUtilTS = s.TimeStamp
		}
		if s.Pid == m.pid {
			continue
		}
		if old, ok := latest[s.Pid]; !ok || s.TimeStamp > old.TimeStamp {
			latest[s.Pid] = s
		}
	}
	sum := 0.0
	for _, s := range latest {
		sum += float64(s.SmUtil)
	}
	return math.Min(sum, 100)
}

// clockEvents maps NVML's reason bits (the same values under their old
// "throttle" and new "event" names) onto the three the policy acts on.
// GpuIdle, application-clock settings, sync boost and display clocks are
// not throttling and are left out.
func clockEvents(bits uint64) ClockEvents {
	var e ClockEvents
	if bits&(nvml.ClocksEventReasonSwThermalSlowdown|nvml.ClocksThrottleReasonHwThermalSlowdown) != 0 {
		e |= EventThermal
	}
	if bits&nvml.ClocksEventReasonSwPowerCap != 0 {
		e |= EventPowerCap
	}
	if bits&(nvml.ClocksThrottleReasonHwSlowdown|nvml.ClocksThrottleReasonHwPowerBrakeSlowdown) != 0 {
		e |= EventHWSlowdown
	}
	return e
}

func (m *nvmlMonitor) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	if ret := m.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvmlShutdown: %v", ret)
	}
	return nil
}

// nvmlCount is how many GPUs NVML sees.
func nvmlCount(library string) (int, error) {
	var lib nvml.Interface
	if library != "" {
		lib = nvml.New(nvml.WithLibraryPath(library))
	} else {
		lib = nvml.New()
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return 0, errors.New("libnvidia-ml.so.1 not found (no NVIDIA driver installed, or not visible here)")
		}
		return 0, fmt.Errorf("nvmlInit: %v", ret)
	}
	defer lib.Shutdown()
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return 0, fmt.Errorf("nvmlDeviceGetCount: %v", ret)
	}
	return n, nil
}
