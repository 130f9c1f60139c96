// Package gpu reads GPU telemetry (NVML on discrete GPUs, sysfs and procfs
// on Jetson) and decides, with a pure policy function, whether the network
// may run the next tile now, must wait, should slow down or should use
// smaller tiles. It knows nothing of the daemon or the model: the daemon
// wires a Monitor and Decide into the pipeline's Gate hook.
//
// A machine without a GPU, a missing driver library, a device that is gone
// or a field the hardware does not report are normal states here: they are
// logged once and read as "unknown", never as a crash, and unknown readings
// never hold the network back.
package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"
)

// Logger receives the monitor's rare notable events (a field not supported,
// the fallback Open chose). kv are alternating keys and values. It matches
// spool.Logger and watch.Logger, so the daemon passes the same adapter.
type Logger = func(level, msg string, kv ...any)

// Unknown is the value of a float reading the monitor could not get. Every
// float field of Readings uses it: test with Known, never with ==.
var Unknown = math.NaN()

// Known reports whether a reading was available (not NaN).
func Known(v float64) bool { return !math.IsNaN(v) }

// ClockEvents are the reasons the GPU is running below its maximum clocks,
// reduced from NVML's clocks-event (formerly "throttle") reasons to the three
// the policy acts on.
type ClockEvents uint8

const (
	// EventThermal: software or hardware thermal slowdown (NVML
	// SwThermalSlowdown, HwThermalSlowdown).
	EventThermal ClockEvents = 1 << iota
	// EventPowerCap: the software power cap holds clocks down (NVML
	// SwPowerCap). Normal at full load on data-centre cards.
	EventPowerCap
	// EventHWSlowdown: hardware slowdown, clocks cut by half or more (NVML
	// HwSlowdown, HwPowerBrakeSlowdown: power brake or external signal).
	EventHWSlowdown
)

func (e ClockEvents) String() string {
	if e == 0 {
		return "none"
	}
	s := ""
	for _, x := range []struct {
		bit  ClockEvents
		name string
	}{{EventThermal, "thermal"}, {EventPowerCap, "power_cap"}, {EventHWSlowdown, "hw_slowdown"}} {
		if e&x.bit != 0 {
			if s != "" {
				s += "+"
			}
			s += x.name
		}
	}
	return s
}

// Readings are one sample of the GPU's state. Float fields are NaN (Unknown)
// when the monitor could not read them; check with Known. Memory is in
// bytes, temperatures in degrees Celsius, utilisation in percent (0..100),
// power in watts.
type Readings struct {
	Time   time.Time // when the sample was taken
	Device string    // e.g. "NVIDIA H100 80GB HBM3", "Jetson (ga10b)"

	// Device memory. On Jetson the GPU shares the system memory: Total is
	// MemTotal, Free is MemAvailable (what an allocation can still get),
	// Used is Total - Free, and SharedMemory is true.
	MemTotal, MemFree, MemUsed float64
	SharedMemory               bool
	// NvMapUsed is the memory the Jetson GPU driver (nvmap) has handed out,
	// from /proc/meminfo's NvMapMemUsed; Unknown elsewhere.
	NvMapUsed float64
	// OtherMemUsed is the device memory held by other processes' compute
	// contexts (NVML's running compute processes, minus our own PID).
	// Unknown on Jetson and where NVML does not list processes.
	OtherMemUsed float64

	// TempC is the GPU temperature; SlowdownC and ShutdownC are the GPU's
	// own thresholds (NVML), or the GPU thermal zone's passive and critical
	// trip points (Jetson).
	TempC, SlowdownC, ShutdownC float64

	// GPUUtil is the share of time a kernel ran during the last sample
	// period; MemUtil the share of time device memory was read or written.
	// OtherUtil is the SM utilisation of other processes (NVML per-process
	// samples, summed, minus ours).
	GPUUtil, MemUtil, OtherUtil float64

	PowerW, PowerLimitW float64

	// Events are the current clock-event reasons; EventsKnown says whether
	// the monitor can read them at all (false on Jetson).
	Events      ClockEvents
	EventsKnown bool
}

// Empty returns readings with every field unknown.
func Empty(now time.Time) Readings {
	u := Unknown
	return Readings{Time: now, MemTotal: u, MemFree: u, MemUsed: u, NvMapUsed: u, OtherMemUsed: u,
		TempC: u, SlowdownC: u, ShutdownC: u, GPUUtil: u, MemUtil: u, OtherUtil: u, PowerW: u, PowerLimitW: u}
}

// Monitor reads one GPU. Implementations are safe for use by one goroutine
// at a time; the daemon serialises calls.
type Monitor interface {
	// Name is the kind in use: "nvml", "jetson" or "none".
	Name() string
	// Read takes one sample. Fields the device does not report are
	// Unknown; an error means the sample as a whole failed (the GPU fell
	// off the bus, the driver went away) and the readings hold what was
	// read before the failure.
	Read(ctx context.Context) (Readings, error)
	// Close releases the library; a second Close is harmless.
	Close() error
}

// Kinds accepted by Open (config gpu.monitor).
const (
	KindAuto   = "auto"
	KindNVML   = "nvml"
	KindJetson = "jetson"
	KindNone   = "none"
)

// Options choose and configure the monitor.
type Options struct {
	// Kind is "auto" (NVML if it finds a device that reports memory, else
	// Jetson sysfs if a Tegra GPU is present, else none), "nvml", "jetson"
	// or "none". An explicit kind that does not work is an error.
	Kind string
	// Device is the NVML index of the GPU to watch (0 = the first).
	Device int
	// Root prefixes every sysfs and procfs path ("" = "/"), so tests build
	// a fake tree in a temporary folder.
	Root string
	// NVMLLibrary is the NVML shared library ("" = libnvidia-ml.so.1,
	// found by the dynamic loader).
	NVMLLibrary string
	// PID is our own process, left out of "other processes" (0 =
	// os.Getpid()). In a container with its own PID namespace NVML reports
	// host PIDs, so our own use may be counted as another process's.
	PID int
	// Log receives notable events; nil discards them.
	Log Logger
}

// ErrUnavailable is wrapped by Open's error when an explicitly requested
// monitor cannot work on this machine.
var ErrUnavailable = errors.New("GPU monitor unavailable")

// Open returns the monitor opts.Kind names. With "auto" it never fails: it
// falls back to "none" and logs why the others did not apply.
func Open(opts Options) (Monitor, error) {
	if opts.PID == 0 {
		opts.PID = os.Getpid()
	}
	if opts.Log == nil {
		opts.Log = func(string, string, ...any) {}
	}
	switch opts.Kind {
	case KindNVML:
		m, err := openNVML(opts)
		if err != nil {
			return nil, fmt.Errorf("gpu.monitor = \"nvml\": %w: %v", ErrUnavailable, err)
		}
		return m, nil
	case KindJetson:
		m, err := openJetson(opts)
		if err != nil {
			return nil, fmt.Errorf("gpu.monitor = \"jetson\": %w: %v", ErrUnavailable, err)
		}
		return m, nil
	case KindNone:
		return None(), nil
	case KindAuto, "":
		nm, nerr := openNVML(opts)
		if nerr == nil {
			opts.Log("info", "gpu monitor: nvml", "device", nm.device)
			return nm, nil
		}
		jm, jerr := openJetson(opts)
		if jerr == nil {
			opts.Log("info", "gpu monitor: jetson sysfs", "nvml", nerr.Error(), "load", jm.loadPath, "thermal_zone", jm.zoneType)
			return jm, nil
		}
		opts.Log("info", "gpu monitor: none (no usable GPU telemetry)", "nvml", nerr.Error(), "jetson", jerr.Error())
		return None(), nil
	default:
		return nil, fmt.Errorf("gpu.monitor = %q: want \"auto\", \"nvml\", \"jetson\" or \"none\"", opts.Kind)
	}
}

// None is the monitor of a machine without GPU telemetry: every reading is
// unknown, so the policy always says Run.
func None() Monitor { return noneMonitor{} }

type noneMonitor struct{}

func (noneMonitor) Name() string { return KindNone }
func (noneMonitor) Read(context.Context) (Readings, error) {
	r := Empty(time.Now())
	r.Device = "none"
	return r, nil
}
func (noneMonitor) Close() error { return nil }

// onceLog logs each key once: a field that is not supported stays not
// supported, and saying so at every poll would flood the journal.
type onceLog struct {
	mu   sync.Mutex
	log  Logger
	seen map[string]bool
}

func (o *onceLog) once(key, level, msg string, kv ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]bool{}
	}
	if o.seen[key] {
		return
	}
	o.seen[key] = true
	o.log(level, msg, kv...)
}

// Count is how many GPUs this machine has, as NVML sees them (the indices
// gpu.device and backend.devices name); a Jetson, which NVML does not
// serve, has one. An error says why neither could tell.
func Count(nvmlLibrary string) (int, error) {
	n, nerr := nvmlCount(nvmlLibrary)
	if nerr == nil {
		return n, nil
	}
	if _, jerr := openJetson(Options{Log: func(string, string, ...any) {}}); jerr == nil {
		return 1, nil
	}
	return 0, fmt.Errorf("no GPU found: NVML: %v; not a Jetson", nerr)
}
