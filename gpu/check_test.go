package gpu

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestGPUCheck is the check for a machine with a real GPU, run by
// scripts/gpu-check.sh (HIDIFFD_GPU_CHECK=1) while a PyTorch load beside
// it heats the GPU and takes memory in steps. Once a second it reads the
// GPU and prints the readings and the decisions of several policies, one
// JSON line each, to stdout and to $HIDIFFD_GPU_CHECK_OUT if set:
//
//   - "default": the shipped [gpu] defaults (config.toml);
//   - "memory": memory thresholds set from this GPU's size (wait below 25 %
//     free, shrink below 55 %), so the load's steps cross them;
//   - "temp": pause 6 C above the starting temperature, resume 3 C above;
//   - "others": wait while other processes hold more than 35 % of memory
//     or 50 % of the SMs;
//   - "events": thermal and hardware slowdown wait, power cap slows.
//
// It fails only on what must work on any NVML GPU: the monitor opens, every
// read succeeds, memory and temperature are known. What depends on the
// machine (process visibility in a container, whether the GPU reaches its
// power cap) is reported in the summary.
//
// Environment: HIDIFFD_GPU_CHECK_SECONDS (default 60),
// HIDIFFD_GPU_CHECK_MONITOR (default "nvml"), HIDIFFD_GPU_CHECK_OUT (a
// file for the JSON lines), HIDIFFD_GPU_CHECK_ROOT (sysfs/procfs root, for a
// dry run of the check against a fake Jetson tree).
func TestGPUCheck(t *testing.T) {
	if os.Getenv("HIDIFFD_GPU_CHECK") != "1" {
		t.Skip("set HIDIFFD_GPU_CHECK=1 (scripts/gpu-check.sh) on a machine with a GPU")
	}
	seconds := 60
	if v := os.Getenv("HIDIFFD_GPU_CHECK_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("HIDIFFD_GPU_CHECK_SECONDS=%q", v)
		}
		seconds = n
	}
	kind := os.Getenv("HIDIFFD_GPU_CHECK_MONITOR")
	if kind == "" {
		kind = KindNVML
	}
	var out io.Writer = os.Stdout
	if p := os.Getenv("HIDIFFD_GPU_CHECK_OUT"); p != "" {
		os.MkdirAll(filepath.Dir(p), 0o755)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out = io.MultiWriter(os.Stdout, f)
	}
	logf := func(level, msg string, kv ...any) { t.Logf("monitor %s: %s %v", level, msg, kv) }

	t0 := time.Now()
	mon, err := Open(Options{Kind: kind, Root: os.Getenv("HIDIFFD_GPU_CHECK_ROOT"), Log: logf})
	if err != nil {
		t.Fatalf("open %s: %v", kind, err)
	}
	defer mon.Close()
	t.Logf("opened %s in %v", mon.Name(), time.Since(t0))
	ctx := context.Background()
	first, err := mon.Read(ctx)
	if err != nil {
		t.Fatalf("first read: %v", err)
	}
	if !Known(first.MemTotal) || !Known(first.TempC) {
		t.Fatalf("memory or temperature unknown: %+v", first)
	}
	totalMiB := first.MemTotal / mib

	policies := map[string]PolicyConfig{}
	base := PolicyConfig{ // the shipped defaults (config.Default().GPU)
		Poll: time.Second, TempPauseC: 85, TempResumeC: 75, SlowdownMarginC: 3,
		MinFreeMiB: 512, FreeHysteresisMiB: 256, ShrinkFreeMiB: 2048, Tile: 384, MinTile: 128,
		OnThermal: OnEventWait, OnPowerCap: OnEventIgnore, OnHWSlowdown: OnEventWait,
		SlowPause: 250 * time.Millisecond, ResumeHold: 5 * time.Second,
	}
	policies["default"] = base
	p := base
	p.MinFreeMiB, p.ShrinkFreeMiB, p.FreeHysteresisMiB = 0.25*totalMiB, 0.55*totalMiB, 0.05*totalMiB
	policies["memory"] = p
	p = base
	p.TempPauseC, p.TempResumeC = first.TempC+6, first.TempC+3
	policies["temp"] = p
	p = base
	p.MaxOtherMemMiB, p.MaxOtherUtilPercent = 0.35*totalMiB, 50
	policies["others"] = p
	p = base
	p.OnPowerCap = OnEventSlow
	policies["events"] = p
	names := []string{"default", "memory", "temp", "others", "events"}
	states := map[string]State{}
	seen := map[string]map[string]bool{} // policy -> "action/reason" seen
	for _, n := range names {
		seen[n] = map[string]bool{}
	}

	enc := json.NewEncoder(out)
	enc.Encode(map[string]any{"monitor": mon.Name(), "device": first.Device, "kind": kind,
		"policies": policies, "start_temp_c": first.TempC, "total_mib": totalMiB})
	var maxOtherMem, maxOtherUtil, maxTemp, minFree, maxPower float64
	minFree = math.Inf(1)
	var events ClockEvents
	failures := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; i < seconds; i++ {
		<-tick.C
		rs := time.Now()
		r, err := mon.Read(ctx)
		took := time.Since(rs)
		line := map[string]any{"t": math.Round(time.Since(t0).Seconds()*10) / 10, "read_ms": took.Milliseconds(),
			"readings": jsonReadings(r)}
		if err != nil {
			failures++
			line["error"] = err.Error()
		}
		dec := map[string]string{}
		for _, n := range names {
			d, st := Decide(r, policies[n], states[n], r.Time)
			states[n] = st
			s := d.Action.String()
			if d.Reason != "" {
				s += "/" + d.Reason
			}
			seen[n][s] = true
			if d.Action != Run {
				s += fmt.Sprintf(" tile=%d (%s)", d.TileEdge, d.Detail)
			}
			dec[n] = s
		}
		line["decisions"] = dec
		enc.Encode(line)
		maxOtherMem = max(maxOtherMem, nz(r.OtherMemUsed)/mib)
		maxOtherUtil = max(maxOtherUtil, nz(r.OtherUtil))
		maxTemp = max(maxTemp, nz(r.TempC))
		maxPower = max(maxPower, nz(r.PowerW))
		if Known(r.MemFree) {
			minFree = min(minFree, r.MemFree/mib)
		}
		events |= r.Events
		if !Known(r.MemFree) || !Known(r.TempC) {
			failures++
			t.Errorf("t=%d: memory or temperature unknown", i)
		}
	}
	summary := map[string]any{
		"summary": true, "read_failures": failures,
		"temp_c": []float64{first.TempC, maxTemp}, "min_free_mib": minFree, "max_power_w": maxPower,
		"max_other_memory_mib": maxOtherMem, "max_other_sm_percent": maxOtherUtil, "events_seen": events.String(),
		"decisions_seen": seen,
		"fields_known": map[string]bool{
			"slowdown_c": Known(first.SlowdownC), "shutdown_c": Known(first.ShutdownC), "power": Known(first.PowerW),
			"power_limit": Known(first.PowerLimitW), "utilization": Known(first.GPUUtil), "other_memory": Known(first.OtherMemUsed),
			"other_util": Known(first.OtherUtil), "events": first.EventsKnown,
		},
	}
	enc.Encode(summary)
	if failures > 0 {
		t.Errorf("%d failed reads", failures)
	}
	// Observations, not failures: they depend on the load and the machine.
	if maxOtherMem < 1024 {
		t.Logf("WARN: other processes' memory never above 1 GiB (max %.0f MiB): load not running, or NVML cannot see it here", maxOtherMem)
	}
	if !seen["memory"]["shrink/memory"] || !seen["memory"]["wait/memory"] {
		t.Logf("WARN: the memory policy did not reach both shrink and wait: %v", seen["memory"])
	}
	if !seen["temp"]["wait/temperature"] {
		t.Logf("WARN: the GPU did not warm by 6 C (%.0f -> %.0f C)", first.TempC, maxTemp)
	}
}

func nz(v float64) float64 {
	if Known(v) {
		return v
	}
	return 0
}

// jsonReadings turns Unknown into null (JSON has no NaN).
func jsonReadings(r Readings) map[string]any {
	f := func(v float64, scale float64) any {
		if !Known(v) {
			return nil
		}
		return math.Round(v/scale*10) / 10
	}
	return map[string]any{
		"device": r.Device, "mem_total_mib": f(r.MemTotal, mib), "mem_free_mib": f(r.MemFree, mib), "mem_used_mib": f(r.MemUsed, mib),
		"other_mem_mib": f(r.OtherMemUsed, mib), "temp_c": f(r.TempC, 1), "slowdown_c": f(r.SlowdownC, 1), "shutdown_c": f(r.ShutdownC, 1),
		"gpu_util": f(r.GPUUtil, 1), "mem_util": f(r.MemUtil, 1), "other_util": f(r.OtherUtil, 1),
		"power_w": f(r.PowerW, 1), "power_limit_w": f(r.PowerLimitW, 1), "events": r.Events.String(), "events_known": r.EventsKnown,
		"nvmap_mib": f(r.NvMapUsed, mib),
	}
}
