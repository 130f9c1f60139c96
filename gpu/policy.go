package gpu

import (
	"fmt"
	"strings"
	"time"
)

// Action is what the policy tells the network to do before the next tile.
type Action int

const (
	// Run the tile now, at Decision.TileEdge.
	Run Action = iota
	// Shrink: run now, but with tiles no larger than Decision.TileEdge
	// (memory is short, not critically).
	Shrink
	// Slow: sleep Decision.Recheck, then run the tile (a clock event the
	// configuration answers with "slow": a duty cycle instead of a stop).
	Slow
	// Wait: do not run; ask again after Decision.Recheck.
	Wait
)

func (a Action) String() string {
	switch a {
	case Run:
		return "run"
	case Shrink:
		return "shrink"
	case Slow:
		return "slow"
	case Wait:
		return "wait"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Reasons, used as the metrics' reason label.
const (
	ReasonTemperature    = "temperature"
	ReasonMemory         = "memory"
	ReasonOtherProcesses = "other_processes"
	ReasonClockThermal   = "clock_thermal"
	ReasonClockPower     = "clock_power"
	ReasonClockHW        = "clock_hw_slowdown"
)

// Reasons lists every reason, for pre-creating metric labels.
var Reasons = []string{ReasonTemperature, ReasonMemory, ReasonOtherProcesses, ReasonClockThermal, ReasonClockPower, ReasonClockHW}

// Answers to a clock event (config gpu.on_*_event).
const (
	OnEventWait   = "wait"
	OnEventSlow   = "slow"
	OnEventIgnore = "ignore"
)

// PolicyConfig is the [gpu] configuration as the policy needs it, plus the
// tile the pipeline wants right now.
type PolicyConfig struct {
	// Poll is the recheck interval while waiting.
	Poll time.Duration
	// Pause at TempPauseC, resume below TempResumeC. When the GPU reports
	// a slowdown threshold (or only a shutdown one), the pause point is
	// at most that threshold minus SlowdownMarginC, and the resume point
	// moves down with it so the band keeps its width.
	TempPauseC, TempResumeC, SlowdownMarginC float64
	// Wait while free memory < MinFreeMiB, until it is above MinFreeMiB +
	// FreeHysteresisMiB. Below ShrinkFreeMiB (0 = never) the tile shrinks:
	// each halving of the edge quarters a tile's activation memory, so the
	// edge halves each time free memory falls through another quarter of
	// the band between MinFreeMiB and ShrinkFreeMiB, down to MinTile.
	// Growing back needs FreeHysteresisMiB more.
	MinFreeMiB, FreeHysteresisMiB, ShrinkFreeMiB float64
	// Tile is the edge the pipeline wants for this frame (model.tile, or
	// the whole frame's longer padded side); MinTile is the floor for
	// shrinking.
	Tile, MinTile int
	// Wait while other processes use more than this share of the SMs or
	// this much memory (0 = no limit).
	MaxOtherUtilPercent, MaxOtherMemMiB float64
	// OnThermal, OnPowerCap, OnHWSlowdown: OnEventWait, OnEventSlow or
	// OnEventIgnore for each kind of clock event.
	OnThermal, OnPowerCap, OnHWSlowdown string
	// SlowPause is the sleep before each tile while slowing down.
	SlowPause time.Duration
	// ResumeHold keeps a wait or slow-down for other processes or a clock
	// event this long after the cause was last seen: those readings flap
	// from one sample to the next, temperatures and memory do not need it
	// (they have a band).
	ResumeHold time.Duration
}

// State is what the policy remembers between decisions (the hysteresis).
// The zero State is the start: nothing latched.
type State struct {
	Hot        bool // paused for temperature until below the resume point
	LowMemory  bool // waiting for memory until above min + hysteresis
	Halvings   int  // tile halvings in force for memory
	OtherUntil time.Time
	// EventUntil holds each clock-event kind (thermal, power cap, hardware
	// slowdown) until this time.
	EventUntil [3]time.Time
}

// Decision is the policy's answer for the next tile.
type Decision struct {
	Action Action
	// Reason is one of the Reason* constants ("" for Run).
	Reason string
	// Detail says why in words, for logs.
	Detail string
	// Recheck: for Wait, when to ask again; for Slow, the pause.
	Recheck time.Duration
	// TileEdge is the largest tile edge allowed now (cfg.Tile when memory
	// is not short). It is set for every action.
	TileEdge int
}

// tileMultiple keeps shrunk tiles on a multiple of 16, the largest pad
// multiple HI-Diff's exports use (config also requires model.tile % 16 = 0).
const tileMultiple = 16

const mib = 1 << 20

// Decide maps one sample to a decision. It is a pure function of its
// arguments: the caller keeps the returned State for the next call and
// passes the current time, so recorded sequences replay exactly.
//
// Unknown readings (NaN) never hold the network back: a monitor that cannot
// read a field, or fails, must not stop the daemon. Such a rule's latch is
// released.
func Decide(r Readings, cfg PolicyConfig, prev State, now time.Time) (Decision, State) {
	var st State
	var waits, slows []Decision

	// Temperature, with the GPU's own threshold when it tells us one.
	if Known(r.TempC) {
		pause, resume := cfg.TempPauseC, cfg.TempResumeC
		limit := r.SlowdownC
		if !Known(limit) {
			limit = r.ShutdownC
		}
		if Known(limit) && limit-cfg.SlowdownMarginC < pause {
			shift := pause - (limit - cfg.SlowdownMarginC)
			pause, resume = pause-shift, resume-shift
		}
		if prev.Hot {
			st.Hot = r.TempC >= resume
		} else {
			st.Hot = r.TempC >= pause
		}
		if st.Hot {
			waits = append(waits, Decision{Reason: ReasonTemperature,
				Detail: fmt.Sprintf("GPU at %.1f C; paused at %.1f C, resumes below %.1f C", r.TempC, pause, resume)})
		}
	}

	// Memory: wait when critical, shrink when short.
	if Known(r.MemFree) {
		free := r.MemFree / mib
		resume := cfg.MinFreeMiB + cfg.FreeHysteresisMiB
		if prev.LowMemory {
			st.LowMemory = free < resume
		} else {
			st.LowMemory = free < cfg.MinFreeMiB
		}
		if st.LowMemory {
			waits = append(waits, Decision{Reason: ReasonMemory,
				Detail: fmt.Sprintf("%.0f MiB free; waits below %.0f MiB, resumes above %.0f MiB", free, cfg.MinFreeMiB, resume)})
		}
		if cfg.ShrinkFreeMiB > cfg.MinFreeMiB {
			h := halvingsFor(free, cfg)
			if h < prev.Halvings {
				// Grow back only once free memory clears the boundary by
				// the hysteresis.
				h = min(prev.Halvings, halvingsFor(free-cfg.FreeHysteresisMiB, cfg))
			}
			st.Halvings = h
		}
	}
	// The level follows free memory even when this tile cannot shrink
	// (already at MinTile), so a larger tile later starts shrunk.
	edge := shrunkEdge(cfg.Tile, cfg.MinTile, st.Halvings)

	// Other processes: a limit on how much of the GPU others may use.
	other := []string{}
	if cfg.MaxOtherUtilPercent > 0 && Known(r.OtherUtil) && r.OtherUtil > cfg.MaxOtherUtilPercent {
		other = append(other, fmt.Sprintf("%.0f%% SM > %.0f%%", r.OtherUtil, cfg.MaxOtherUtilPercent))
	}
	if cfg.MaxOtherMemMiB > 0 && Known(r.OtherMemUsed) && r.OtherMemUsed/mib > cfg.MaxOtherMemMiB {
		other = append(other, fmt.Sprintf("%.0f MiB > %.0f MiB", r.OtherMemUsed/mib, cfg.MaxOtherMemMiB))
	}
	st.OtherUntil = prev.OtherUntil
	if len(other) > 0 {
		st.OtherUntil = now.Add(cfg.ResumeHold)
	}
	if len(other) > 0 || now.Before(st.OtherUntil) {
		d := "other processes: " + strings.Join(other, ", ")
		if len(other) == 0 {
			d = fmt.Sprintf("other processes were over the limit; holding until %s", st.OtherUntil.Format("15:04:05.000"))
		}
		waits = append(waits, Decision{Reason: ReasonOtherProcesses, Detail: d})
	}

	// Clock events, each kind answered per configuration.
	kinds := []struct {
		bit    ClockEvents
		on     string
		reason string
	}{
		{EventHWSlowdown, cfg.OnHWSlowdown, ReasonClockHW},
		{EventThermal, cfg.OnThermal, ReasonClockThermal},
		{EventPowerCap, cfg.OnPowerCap, ReasonClockPower},
	}
	for _, k := range kinds {
		i := eventIndex(k.bit)
		if k.on != OnEventWait && k.on != OnEventSlow {
			continue // ignored: no hold either, so a switch to "ignore" on reload takes effect at once
		}
		st.EventUntil[i] = prev.EventUntil[i]
		present := r.EventsKnown && r.Events&k.bit != 0
		if present {
			st.EventUntil[i] = now.Add(cfg.ResumeHold)
		}
		if !present && !now.Before(st.EventUntil[i]) {
			continue
		}
		d := Decision{Reason: k.reason, Detail: "clock event " + k.bit.String()}
		if !present {
			d.Detail += fmt.Sprintf(" ended; holding until %s", st.EventUntil[i].Format("15:04:05.000"))
		}
		if k.on == OnEventWait {
			waits = append(waits, d)
		} else {
			slows = append(slows, d)
		}
	}

	switch {
	case len(waits) > 0:
		d := waits[0]
		d.Action, d.Recheck, d.TileEdge = Wait, cfg.Poll, edge
		return d, st
	case len(slows) > 0:
		d := slows[0]
		d.Action, d.Recheck, d.TileEdge = Slow, cfg.SlowPause, edge
		return d, st
	case edge < cfg.Tile:
		return Decision{Action: Shrink, Reason: ReasonMemory, TileEdge: edge,
			Detail: fmt.Sprintf("%.0f MiB free (< %.0f MiB): tile %d -> %d", r.MemFree/mib, cfg.ShrinkFreeMiB, cfg.Tile, edge)}, st
	}
	return Decision{Action: Run, TileEdge: cfg.Tile}, st
}

// halvingsFor is the number of tile halvings for free MiB of free memory:
// 0 at or above ShrinkFreeMiB, then one more each time the position in the
// band [MinFreeMiB, ShrinkFreeMiB) falls below another power of 1/4.
func halvingsFor(free float64, cfg PolicyConfig) int {
	if free >= cfg.ShrinkFreeMiB {
		return 0
	}
	f := (free - cfg.MinFreeMiB) / (cfg.ShrinkFreeMiB - cfg.MinFreeMiB)
	h := 1
	for th := 0.25; f < th && h < 16; th /= 4 {
		h++
	}
	return h
}

// shrunkEdge halves tile h times, each time down to a multiple of
// tileMultiple, stopping at minTile.
func shrunkEdge(tile, minTile, h int) int {
	e := tile
	for i := 0; i < h; i++ {
		n := e / 2 / tileMultiple * tileMultiple
		if n < minTile {
			n = minTile
		}
		if n >= e {
			break
		}
		e = n
	}
	return e
}

func eventIndex(e ClockEvents) int {
	switch e {
	case EventThermal:
		return 0
	case EventPowerCap:
		return 1
	}
	return 2
}
