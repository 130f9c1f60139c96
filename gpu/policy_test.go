package gpu

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func testPolicy() PolicyConfig {
	return PolicyConfig{
		Poll:       time.Second,
		TempPauseC: 85, TempResumeC: 75, SlowdownMarginC: 3,
		MinFreeMiB: 512, FreeHysteresisMiB: 256, ShrinkFreeMiB: 2048,
		Tile: 384, MinTile: 128,
		OnThermal: OnEventWait, OnPowerCap: OnEventIgnore, OnHWSlowdown: OnEventWait,
		SlowPause: 250 * time.Millisecond, ResumeHold: 5 * time.Second,
	}
}

// step is one recorded sample and the decision expected for it. Fields
// left at their zero value in the table mean "not reported": nan marks
// that explicitly for numbers where 0 is meaningful.
type step struct {
	at     float64 // seconds since the start
	temp   float64 // C; 0 = unknown
	free   float64 // MiB; 0 = unknown
	other  float64 // other processes' MiB; 0 = unknown
	util   float64 // other processes' SM %; 0 = unknown
	events ClockEvents
	evKnow bool

	want   Action
	reason string
	tile   int // 0: don't check
}

func (s step) readings(t0 time.Time) Readings {
	r := Empty(t0.Add(time.Duration(s.at * float64(time.Second))))
	set := func(dst *float64, v float64) {
		if v != 0 {
			*dst = v
		}
	}
	set(&r.TempC, s.temp)
	if s.free != 0 {
		r.MemFree = s.free * mib
	}
	if s.other != 0 {
		r.OtherMemUsed = s.other * mib
	}
	set(&r.OtherUtil, s.util)
	r.Events, r.EventsKnown = s.events, s.evKnow
	return r
}

// replay runs Decide over the steps, feeding back the state, and checks
// each decision. It returns the number of times the action changed.
func replay(t *testing.T, cfg PolicyConfig, r0 Readings, steps []step) (changes int) {
	t.Helper()
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var st State
	var last Action = Run
	for i, s := range steps {
		r := s.readings(t0)
		if Known(r0.SlowdownC) {
			r.SlowdownC = r0.SlowdownC
		}
		if Known(r0.ShutdownC) {
			r.ShutdownC = r0.ShutdownC
		}
		var d Decision
		d, st = Decide(r, cfg, st, r.Time)
		desc := fmt.Sprintf("step %d (t=%.1fs temp=%v free=%v other=%v util=%v ev=%v): got %v/%q tile %d (%s)",
			i, s.at, s.temp, s.free, s.other, s.util, s.events, d.Action, d.Reason, d.TileEdge, d.Detail)
		if d.Action != s.want || (s.reason != "" && d.Reason != s.reason) {
			t.Errorf("%s; want %v/%q", desc, s.want, s.reason)
		}
		if s.tile != 0 && d.TileEdge != s.tile {
			t.Errorf("%s; want tile %d", desc, s.tile)
		}
		if d.Action == Wait && d.Recheck != cfg.Poll {
			t.Errorf("%s; wait recheck %v, want the poll interval", desc, d.Recheck)
		}
		if d.Action != last {
			changes++
			last = d.Action
		}
	}
	return changes
}

var noThresholds = Empty(time.Time{})

func TestPolicyHeatingAndCoolingWithHysteresis(t *testing.T) {
	n := replay(t, testPolicy(), noThresholds, []step{
		{at: 0, temp: 60, want: Run, tile: 384},
		{at: 1, temp: 80, want: Run},
		{at: 2, temp: 84.9, want: Run},
		{at: 3, temp: 85, want: Wait, reason: ReasonTemperature, tile: 384},
		{at: 4, temp: 88, want: Wait, reason: ReasonTemperature},
		{at: 5, temp: 82, want: Wait, reason: ReasonTemperature},
		{at: 6, temp: 76, want: Wait, reason: ReasonTemperature},
		{at: 7, temp: 75, want: Wait, reason: ReasonTemperature}, // resumes *below* 75
		{at: 8, temp: 74.5, want: Run},
		{at: 9, temp: 80, want: Run}, // warming again, below the pause point
		{at: 10, temp: 86, want: Wait, reason: ReasonTemperature},
	})
	if n != 3 {
		t.Errorf("decision changed %d times, want 3 (pause, resume, pause)", n)
	}
}

// Readings that flap around either end of the band must not flap the
// decision: the band is the hysteresis.
func TestPolicyTemperatureFlappingDoesNotFlap(t *testing.T) {
	var steps []step
	// Around the pause point: paused once, stays paused.
	for i, c := range []float64{84.8, 85.1, 84.7, 85.2, 84.9, 85.0, 84.6, 85.3, 84.9} {
		want := Wait
		if i == 0 {
			want = Run
		}
		steps = append(steps, step{at: float64(i), temp: c, want: want})
	}
	// Cool through the resume point, then flap around it: resumed once,
	// stays running.
	for i, c := range []float64{74.9, 75.1, 74.8, 75.2, 74.9, 75.0} {
		steps = append(steps, step{at: float64(10 + i), temp: c, want: Run})
	}
	if n := replay(t, testPolicy(), noThresholds, steps); n != 2 {
		t.Errorf("decision changed %d times, want 2", n)
	}
}

// The GPU's own slowdown threshold, minus the margin, wins over a higher
// configured pause point; the band moves down with it.
func TestPolicyHonoursGPUSlowdownThreshold(t *testing.T) {
	r0 := Empty(time.Time{})
	r0.SlowdownC, r0.ShutdownC = 83, 90 // pause at 80, resume below 70
	replay(t, testPolicy(), r0, []step{
		{at: 0, temp: 79.5, want: Run},
		{at: 1, temp: 80, want: Wait, reason: ReasonTemperature},
		{at: 2, temp: 72, want: Wait},
		{at: 3, temp: 70, want: Wait},
		{at: 4, temp: 69.9, want: Run},
	})
	// Only a shutdown threshold known (a Jetson zone with just a critical
	// trip): it limits the same way.
	r0 = Empty(time.Time{})
	r0.ShutdownC = 84
	replay(t, testPolicy(), r0, []step{
		{at: 0, temp: 80.9, want: Run},
		{at: 1, temp: 81, want: Wait, reason: ReasonTemperature},
	})
	// A threshold far above the configured pause changes nothing.
	r0 = Empty(time.Time{})
	r0.SlowdownC = 105
	replay(t, testPolicy(), r0, []step{{at: 0, temp: 84, want: Run}, {at: 1, temp: 85, want: Wait}})
}

func TestPolicyMemoryShrinkWaitAndRecover(t *testing.T) {
	replay(t, testPolicy(), noThresholds, []step{
		{at: 0, free: 8000, want: Run, tile: 384},
		// Another process takes memory: into the shrink band.
		{at: 1, free: 1800, want: Shrink, reason: ReasonMemory, tile: 192}, // 84% of the band: one halving
		{at: 2, free: 1100, want: Shrink, reason: ReasonMemory, tile: 192}, // 38%: still one halving
		{at: 3, free: 600, want: Shrink, reason: ReasonMemory, tile: 128},  // floor: min_tile
		{at: 4, free: 400, want: Wait, reason: ReasonMemory, tile: 128},    // critical
		{at: 5, free: 700, want: Wait, reason: ReasonMemory},               // above min, below min+hysteresis
		{at: 6, free: 767, want: Wait, reason: ReasonMemory},
		{at: 7, free: 800, want: Shrink, tile: 128},
		// It lets go: grow back only past each boundary plus the
		// hysteresis.
		{at: 8, free: 2100, want: Shrink, tile: 192}, // 2100-256 is still in the band's top quarter
		{at: 9, free: 2200, want: Shrink, tile: 192},
		{at: 10, free: 2304, want: Run, tile: 384}, // 2304-256 = 2048: out of the band
	})
}

// Memory readings flapping around the wait point and around a shrink
// boundary must not flap the decision or the tile size.
func TestPolicyMemoryFlappingDoesNotFlap(t *testing.T) {
	var steps []step
	for i, f := range []float64{520, 505, 530, 510, 600, 700, 760} {
		want := Wait
		if i == 0 {
			want = Shrink
		}
		steps = append(steps, step{at: float64(i), free: f, want: want})
	}
	if n := replay(t, testPolicy(), noThresholds, steps); n != 2 {
		t.Errorf("decision changed %d times, want 2 (shrink, wait)", n)
	}
	// Around the top of the shrink band (2048 MiB): once shrunk, the tile
	// stays shrunk until free memory clears 2048 + 256.
	steps = steps[:0]
	for i, f := range []float64{2100, 2040, 2060, 2030, 2100, 2200, 2050} {
		want, tile := Shrink, 192
		if i == 0 {
			want, tile = Run, 384
		}
		steps = append(steps, step{at: float64(i), free: f, want: want, tile: tile})
	}
	if n := replay(t, testPolicy(), noThresholds, steps); n != 1 {
		t.Errorf("decision changed %d times, want 1", n)
	}
}

func TestPolicyShrinkDisabledAndTileFloor(t *testing.T) {
	cfg := testPolicy()
	cfg.ShrinkFreeMiB = 0
	replay(t, cfg, noThresholds, []step{
		{at: 0, free: 600, want: Run, tile: 384},
		{at: 1, free: 500, want: Wait, tile: 384},
	})
	// A tile already at min_tile cannot shrink: Run, not a no-op Shrink.
	cfg = testPolicy()
	cfg.Tile = 128
	replay(t, cfg, noThresholds, []step{{at: 0, free: 600, want: Run, tile: 128}})
	// Whole-frame edges (not multiples of 16) shrink onto the 16 grid.
	cfg = testPolicy()
	cfg.Tile = 728
	replay(t, cfg, noThresholds, []step{{at: 0, free: 1800, want: Shrink, tile: 352}})
}

func TestPolicyOtherProcessesWithHold(t *testing.T) {
	cfg := testPolicy()
	cfg.MaxOtherMemMiB = 1000
	cfg.MaxOtherUtilPercent = 50
	n := replay(t, cfg, noThresholds, []step{
		{at: 0, other: 10, util: 1, want: Run},
		{at: 1, other: 1500, util: 1, want: Wait, reason: ReasonOtherProcesses},
		// Flapping around the limit: the hold (5 s after the last time
		// over) keeps one continuous wait.
		{at: 2, other: 900, util: 1, want: Wait},
		{at: 3, other: 1100, util: 1, want: Wait},
		{at: 4, other: 950, util: 1, want: Wait},
		{at: 7.9, other: 950, util: 1, want: Wait},
		{at: 8, other: 950, util: 1, want: Run}, // 5 s after the last time over (t=3)
		{at: 10, other: 10, util: 80, want: Wait, reason: ReasonOtherProcesses},
		{at: 11, other: 10, util: 20, want: Wait},
		{at: 15.5, other: 10, util: 20, want: Run},
	})
	if n != 4 {
		t.Errorf("decision changed %d times, want 4", n)
	}
	// Limits off (0): others may use everything.
	replay(t, testPolicy(), noThresholds, []step{{at: 0, other: 70000, util: 100, want: Run}})
}

func TestPolicyClockEvents(t *testing.T) {
	cfg := testPolicy()
	n := replay(t, cfg, noThresholds, []step{
		{at: 0, evKnow: true, want: Run},
		{at: 1, evKnow: true, events: EventPowerCap, want: Run}, // ignored by default: normal at full load
		{at: 2, evKnow: true, events: EventThermal, want: Wait, reason: ReasonClockThermal},
		// On/off from one sample to the next: held.
		{at: 3, evKnow: true, want: Wait, reason: ReasonClockThermal},
		{at: 4, evKnow: true, events: EventThermal, want: Wait},
		{at: 5, evKnow: true, want: Wait},
		{at: 8.9, evKnow: true, want: Wait},
		{at: 9, evKnow: true, want: Run},
		// Hardware slowdown outranks thermal when both are set (the HW
		// bit comes with HW thermal slowdown).
		{at: 10, evKnow: true, events: EventThermal | EventHWSlowdown, want: Wait, reason: ReasonClockHW},
	})
	if n != 3 {
		t.Errorf("decision changed %d times, want 3", n)
	}

	// "slow": a pause before each tile instead of a stop.
	cfg = testPolicy()
	cfg.OnPowerCap = OnEventSlow
	t0 := time.Now()
	r := Empty(t0)
	r.Events, r.EventsKnown = EventPowerCap, true
	d, st := Decide(r, cfg, State{}, t0)
	if d.Action != Slow || d.Reason != ReasonClockPower || d.Recheck != cfg.SlowPause {
		t.Errorf("power cap with slow: %+v", d)
	}
	// A reload switching it to "ignore" takes effect at once, hold or not.
	cfg.OnPowerCap = OnEventIgnore
	if d, _ := Decide(r, cfg, st, t0.Add(time.Second)); d.Action != Run {
		t.Errorf("after switching to ignore: %+v", d)
	}
	// Events not readable (Jetson): no event rule applies.
	r.EventsKnown = false
	cfg.OnPowerCap = OnEventWait
	if d, _ := Decide(r, cfg, State{}, t0); d.Action != Run {
		t.Errorf("unknown events: %+v", d)
	}
}

// Unknown readings never hold the network back, even with a latch set: a
// monitor that breaks while the GPU is hot must not stop the daemon.
func TestPolicyUnknownReadingsRun(t *testing.T) {
	cfg := testPolicy()
	t0 := time.Now()
	d, st := Decide(Empty(t0), cfg, State{}, t0)
	if d.Action != Run || d.TileEdge != 384 {
		t.Fatalf("all unknown: %+v", d)
	}
	hot := Empty(t0)
	hot.TempC = 90
	hot.MemFree = 100 * mib
	d, st = Decide(hot, cfg, st, t0)
	if d.Action != Wait || d.Reason != ReasonTemperature {
		t.Fatalf("hot and short of memory: %+v (temperature first)", d)
	}
	if d.TileEdge != 128 {
		t.Errorf("a wait still reports the shrunk tile: %d", d.TileEdge)
	}
	d, _ = Decide(Empty(t0.Add(time.Second)), cfg, st, t0.Add(time.Second))
	if d.Action != Run || d.TileEdge != 384 {
		t.Errorf("unknown after a latch: %+v", d)
	}
	nan := Empty(t0)
	nan.TempC = math.NaN()
	if d, _ := Decide(nan, cfg, State{Hot: true}, t0); d.Action != Run {
		t.Errorf("NaN temperature with Hot latch: %+v", d)
	}
}

func TestShrunkEdgeAndHalvings(t *testing.T) {
	for _, c := range []struct{ tile, min, h, want int }{
		{384, 128, 0, 384}, {384, 128, 1, 192}, {384, 128, 2, 128}, {384, 128, 9, 128},
		{384, 64, 2, 96}, {384, 64, 3, 64}, {512, 64, 3, 64}, {100, 128, 1, 100}, {728, 64, 1, 352},
	} {
		t.Run(fmt.Sprintf("shrunkEdge(%d,%d,%d)", c.tile, c.min, c.h), func(t *testing.T) {
			if got := shrunkEdge(c.tile, c.min, c.h); got != c.want {
				t.Errorf("shrunkEdge(%d, %d, %d) = %d, want %d", c.tile, c.min, c.h, got, c.want)
			}
		})
	}
	cfg := testPolicy() // band 512..2048 (1536 wide)
	for _, c := range []struct {
		free float64
		want int
	}{{2048, 0}, {2047, 1}, {512 + 384, 1}, {512 + 383, 2}, {512 + 96, 2}, {512 + 95, 3}, {512, 16}, {0, 16}} {
		t.Run(fmt.Sprintf("halvingsFor(%v)", c.free), func(t *testing.T) {
			if got := halvingsFor(c.free, cfg); got != c.want {
				t.Errorf("halvingsFor(%v) = %d, want %d", c.free, got, c.want)
			}
		})
	}
}
