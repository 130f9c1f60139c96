package config

import (
	"testing"
	"time"
)

func TestGPUDefaults(t *testing.T) {
	g := Default().GPU
	if g.Monitor != "auto" || g.TempPauseC != 85 || g.TempResumeC != 75 || g.MinTile != 128 ||
		g.Poll.Duration != time.Second || g.OnPowerEvent != "ignore" {
		t.Errorf("defaults %+v", g)
	}
}

func TestGPURangeErrorsNameKeyAndLine(t *testing.T) {
	msg := mustFail(t, `[gpu]
monitor = "cuda"
temp_pause_c = 80
temp_resume_c = 80
min_free_mib = 1000
shrink_free_mib = 900
min_tile = 100
max_other_util_percent = 101
on_power_event = "throttle"
poll = "1ms"
`)
	wantAll(t, msg,
		`:2: gpu.monitor = "cuda"`, `"auto", "nvml", "jetson" or "none"`,
		":4: gpu.temp_resume_c = 80", "below gpu.temp_pause_c (80)",
		":6: gpu.shrink_free_mib = 900", "above gpu.min_free_mib (1000)",
		":7: gpu.min_tile = 100", "multiple of 16",
		":8: gpu.max_other_util_percent = 101",
		`:9: gpu.on_power_event = "throttle"`, `"wait", "slow" or "ignore"`,
		`:10: gpu.poll = "1ms"`, "between 100ms and 1m0s")
	// A near miss in another table points at the gpu key.
	msg = mustFail(t, "[model]\nmin_tile = 64\n")
	wantAll(t, msg, "did you mean gpu.min_tile")
	// 0 turns shrinking off, whatever min_free_mib is.
	if _, err := Parse([]byte("[gpu]\nshrink_free_mib = 0\nmin_free_mib = 4096\n"), "/c.toml"); err != nil {
		t.Error(err)
	}
}
