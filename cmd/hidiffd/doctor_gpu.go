package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"hidiffd/config"
	"hidiffd/daemon"
	"hidiffd/gpu"
)

// doctorGPUMonitor opens the monitor the configuration names, as the daemon
// would, and shows one sample and what the throttle policy would decide
// with it for a frame's first tile.
func doctorGPUMonitor(ctx context.Context, r *doctorReport, cfg *config.Config) {
	r.section(fmt.Sprintf("GPU telemetry (gpu.monitor = %q)", cfg.GPU.Monitor))
	var notes []string
	mon, err := gpu.Open(gpu.Options{Kind: cfg.GPU.Monitor, Device: cfg.GPU.Device,
		Log: func(level, msg string, kv ...any) { notes = append(notes, msg+kvText(kv)) }})
	if err != nil {
		r.fail("%v", err)
		return
	}
	defer mon.Close()
	rd, rerr := mon.Read(ctx)
	for _, n := range notes {
		r.info("%s", n)
	}
	if mon.Name() == gpu.KindNone {
		r.info("monitor: none: no GPU telemetry here; the throttle policy always allows")
		return
	}
	if rerr != nil {
		r.fail("%s: reading failed: %v", mon.Name(), rerr)
	} else {
		r.ok("monitor: %s, %s", mon.Name(), rd.Device)
	}
	shared := ""
	if rd.SharedMemory {
		shared = " (shared with the CPU: MemAvailable)"
	}
	r.info("memory: %s free of %s, %s used%s", mib(rd.MemFree), mib(rd.MemTotal), mib(rd.MemUsed), shared)
	if gpu.Known(rd.NvMapUsed) {
		r.info("nvmap (GPU driver) memory: %s", mib(rd.NvMapUsed))
	}
	r.info("temperature: %s (GPU slowdown at %s, shutdown at %s)", celsius(rd.TempC), celsius(rd.SlowdownC), celsius(rd.ShutdownC))
	r.info("utilisation: GPU %s, memory %s; other processes: %s of the SMs, %s of memory",
		pct(rd.GPUUtil), pct(rd.MemUtil), pct(rd.OtherUtil), mib(rd.OtherMemUsed))
	r.info("power: %s (limit %s)", watts(rd.PowerW), watts(rd.PowerLimitW))
	if rd.EventsKnown {
		r.info("clock events: %s", rd.Events)
	} else {
		r.info("clock events: not reported")
	}
	tile := cfg.Model.Tile
	if tile == 0 {
		tile = 1024 // a whole 720p frame's edge, padded
	}
	d, _ := gpu.Decide(rd, daemon.GPUPolicy(cfg.GPU, tile), gpu.State{}, time.Now())
	line := fmt.Sprintf("policy now: %s, tile %d", d.Action, d.TileEdge)
	if d.Reason != "" {
		line += fmt.Sprintf(" (%s: %s)", d.Reason, d.Detail)
	}
	r.info("%s", line)
}

func kvText(kv []any) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	return b.String()
}

func known(v float64, f string, scale float64) string {
	if !gpu.Known(v) {
		return "unknown"
	}
	return fmt.Sprintf(f, v/scale)
}

func mib(v float64) string     { return known(v, "%.0f MiB", 1<<20) }
func celsius(v float64) string { return known(v, "%.1f C", 1) }
func pct(v float64) string     { return known(v, "%.0f%%", 1) }
func watts(v float64) string   { return known(v, "%.1f W", 1) }
