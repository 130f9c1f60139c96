//go:build cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// fakeNVML is go-nvml's generated mock set up as an H100-like device: the
// reader's handling of NVML's answers (units, NOT_SUPPORTED, processes,
// reason bits, missing symbols) is checked here, where no driver exists.
// Any NVML call the reader makes that the fake does not set up panics.
type fakeNVML struct {
	lib      *mock.Interface
	dev      *mock.Device
	symbols  map[string]bool
	shutdown int
	utilTS   []uint64 // lastSeen arguments of GetProcessUtilization
}

const selfPID = 4242

func newFakeNVML() *fakeNVML {
	f := &fakeNVML{symbols: map[string]bool{
		"nvmlDeviceGetCurrentClocksEventReasons": true,
		"nvmlDeviceGetMemoryInfo_v2":             true,
		"nvmlDeviceGetTemperature":               true,
	}}
	f.dev = &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Free: 70 << 30, Used: 10 << 30}, nvml.SUCCESS
		},
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{Total: 80 << 30, Reserved: 1 << 29, Free: 70 << 30, Used: 9<<30 + 1<<29}, nvml.SUCCESS
		},
		GetTemperatureThresholdFunc: func(th nvml.TemperatureThresholds) (uint32, nvml.Return) {
			switch th {
			case nvml.TEMPERATURE_THRESHOLD_SLOWDOWN:
				return 87, nvml.SUCCESS
			case nvml.TEMPERATURE_THRESHOLD_SHUTDOWN:
				return 92, nvml.SUCCESS
			}
			return 0, nvml.ERROR_NOT_SUPPORTED
		},
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 63, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: 97, Memory: 41}, nvml.SUCCESS
		},
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
			// Power cap plus the idle and sync-boost bits (not throttling).
			return nvml.ClocksEventReasonSwPowerCap | nvml.ClocksEventReasonGpuIdle | nvml.ClocksEventReasonSyncBoost, nvml.SUCCESS
		},
		GetPowerUsageFunc:         func() (uint32, nvml.Return) { return 612345, nvml.SUCCESS }, // mW
		GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return 700000, nvml.SUCCESS },
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{
				{Pid: selfPID, UsedGpuMemory: 3 << 30},
				{Pid: 100, UsedGpuMemory: 2 << 30},
				{Pid: 101, UsedGpuMemory: 1 << 30},
			}, nvml.SUCCESS
		},
	}
	f.dev.GetProcessUtilizationFunc = func(last uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		f.utilTS = append(f.utilTS, last)
		return []nvml.ProcessUtilizationSample{
			{Pid: selfPID, TimeStamp: 1000, SmUtil: 60},
			{Pid: 100, TimeStamp: 900, SmUtil: 50}, // older sample of pid 100: superseded
			{Pid: 100, TimeStamp: 1100, SmUtil: 20},
			{Pid: 101, TimeStamp: 1050, SmUtil: 5},
		}, nvml.SUCCESS
	}
	f.lib = &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { f.shutdown++; return nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) { return f.dev, nvml.SUCCESS },
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
				if f.symbols[s] {
					return nil
				}
				return errors.New("undefined symbol " + s)
			}}
		},
	}
	return f
}

func (f *fakeNVML) open(t *testing.T, lr *logRec) *nvmlMonitor {
	t.Helper()
	if lr == nil {
		lr = &logRec{}
	}
	m, err := newNVML(f.lib, Options{PID: selfPID, Log: lr.log})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNVMLReadings(t *testing.T) {
	f := newFakeNVML()
	m := f.open(t, nil)
	r, err := m.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const gib = 1 << 30
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"MemTotal", r.MemTotal, 80 * gib}, {"MemFree", r.MemFree, 70 * gib},
		{"MemUsed (v2: without the reservation)", r.MemUsed, 9.5 * gib},
		{"TempC", r.TempC, 63}, {"SlowdownC", r.SlowdownC, 87}, {"ShutdownC", r.ShutdownC, 92},
		{"GPUUtil", r.GPUUtil, 97}, {"MemUtil", r.MemUtil, 41},
		{"PowerW", r.PowerW, 612.345}, {"PowerLimitW", r.PowerLimitW, 700},
		{"OtherMemUsed (3 processes minus ours)", r.OtherMemUsed, 3 * gib},
		{"OtherUtil (newest per pid, minus ours)", r.OtherUtil, 25},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !near(c.got, c.want) {
				t.Errorf("%v, want %v", c.got, c.want)
			}
		})
	}
	if !r.EventsKnown || r.Events != EventPowerCap {
		t.Errorf("events %v known %v, want power_cap only", r.Events, r.EventsKnown)
	}
	if r.Device != "NVIDIA H100 80GB HBM3" || m.Name() != KindNVML {
		t.Errorf("device %q name %q", r.Device, m.Name())
	}
	// The next per-process query asks only for samples newer than seen.
	m.Read(context.Background())
	if len(f.utilTS) != 2 || f.utilTS[0] != 0 || f.utilTS[1] != 1100 {
		t.Errorf("lastSeen timestamps %v, want [0 1100]", f.utilTS)
	}
	m.Close()
	m.Close()
	if f.shutdown != 1 {
		t.Errorf("nvmlShutdown called %d times, want 1", f.shutdown)
	}
	if _, err := m.Read(context.Background()); err == nil {
		t.Error("read after close succeeded")
	}
}

// NOT_SUPPORTED fields are unknown and logged once; an older driver without
// the newer symbols is read through the older functions, never by calling
// a symbol the library lacks (that would abort the process).
func TestNVMLUnsupportedAndOldDriver(t *testing.T) {
	f := newFakeNVML()
	f.symbols = map[string]bool{"nvmlDeviceGetCurrentClocksThrottleReasons": true, "nvmlDeviceGetTemperature": true}
	f.dev.GetMemoryInfo_v2Func = nil // would panic if called
	f.dev.GetCurrentClocksEventReasonsFunc = nil
	f.dev.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) {
		return nvml.ClocksThrottleReasonHwSlowdown | nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS
	}
	f.dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	f.dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	f.dev.GetTemperatureThresholdFunc = func(nvml.TemperatureThresholds) (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	f.dev.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return nil, nvml.ERROR_NOT_FOUND // no samples: nobody ran
	}
	f.dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		// A container that cannot see other processes' use.
		return []nvml.ProcessInfo{{Pid: 7, UsedGpuMemory: math.MaxUint64}}, nvml.SUCCESS
	}
	lr := &logRec{}
	m := f.open(t, lr)
	for i := 0; i < 3; i++ {
		r, err := m.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if Known(r.PowerW) || Known(r.PowerLimitW) || Known(r.SlowdownC) || Known(r.OtherMemUsed) {
			t.Errorf("unsupported fields should be unknown: %+v", r)
		}
		if r.OtherUtil != 0 || r.MemUsed != 10<<30 || r.Events != EventThermal|EventHWSlowdown {
			t.Errorf("old-driver read: util %v used %v events %v", r.OtherUtil, r.MemUsed, r.Events)
		}
	}
	if n := lr.count("field not supported"); n != 4 { // power, power_limit, slowdown, shutdown
		t.Errorf("%d 'not supported' lines, want 4 (once per field):\n%s", n, strings.Join(lr.lines, "\n"))
	}
	if n := lr.count("not visible"); n != 1 {
		t.Errorf("hidden process memory logged %d times", n)
	}
}

// A GPU that falls off the bus fails the whole read; the daemon then
// treats the sample as unknown.
func TestNVMLGPULost(t *testing.T) {
	f := newFakeNVML()
	m := f.open(t, nil)
	f.dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	_, err := m.Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "temperature") {
		t.Errorf("got %v", err)
	}
}

func TestNVMLOpenRefusals(t *testing.T) {
	f := newFakeNVML()
	f.lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	if _, err := newNVML(f.lib, Options{}); err == nil || !strings.Contains(err.Error(), "no GPU") {
		t.Errorf("no devices: %v", err)
	}
	if f.shutdown != 1 {
		t.Errorf("failed open must shut NVML down (%d)", f.shutdown)
	}
	f = newFakeNVML()
	if _, err := newNVML(f.lib, Options{Device: 3}); err == nil || !strings.Contains(err.Error(), "gpu.device 3") {
		t.Errorf("bad index: %v", err)
	}
	// Jetson-style NVML: memory NOT_SUPPORTED, so "auto" moves on.
	f = newFakeNVML()
	f.dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_NOT_SUPPORTED }
	if _, err := newNVML(f.lib, Options{}); err == nil || !strings.Contains(err.Error(), "MemoryInfo") {
		t.Errorf("memory not supported: %v", err)
	}
	f = newFakeNVML()
	f.lib.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
	if _, err := newNVML(f.lib, Options{}); err == nil || !strings.Contains(err.Error(), "nvmlInit") {
		t.Errorf("driver not loaded: %v", err)
	}
}

func TestClockEventBits(t *testing.T) {
	for _, c := range []struct {
		bits uint64
		want ClockEvents
	}{
		{0, 0},
		{nvml.ClocksEventReasonGpuIdle | nvml.ClocksEventReasonApplicationsClocksSetting | nvml.ClocksEventReasonDisplayClockSetting, 0},
		{nvml.ClocksEventReasonSwThermalSlowdown, EventThermal},
		{nvml.ClocksThrottleReasonHwThermalSlowdown | nvml.ClocksThrottleReasonHwSlowdown, EventThermal | EventHWSlowdown},
		{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, EventHWSlowdown},
		{nvml.ClocksEventReasonSwPowerCap, EventPowerCap},
	} {
		t.Run(fmt.Sprintf("%#x", c.bits), func(t *testing.T) {
			if got := clockEvents(c.bits); got != c.want {
				t.Errorf("clockEvents(%#x) = %v, want %v", c.bits, got, c.want)
			}
		})
	}
}
