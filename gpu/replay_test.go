package gpu

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/nvml-h100-training.jsonl is scripts/gpu-check.sh's record from a
// real H100 (2026-11-26, driver 580.159.04) while our training ran on it:
// the first line holds the five policies, then one line a second with NVML's
// readings and the decision of each policy, then a summary. The GPU warmed
// from 36 to 49 C and the training used 50-80 % of the SMs, so the "temp"
// policy (pause 42 C, resume 39 C) and the "others" policy (50 % SM) both
// waited. Replaying the readings through Decide must give the decisions the
// H100 run gave; a policy change that alters them must update the record
// knowingly.
const h100Record = "testdata/nvml-h100-training.jsonl"

type recordedLine struct {
	T         float64                 `json:"t"`
	Readings  map[string]any          `json:"readings"`
	Decisions map[string]string       `json:"decisions"`
	Policies  map[string]PolicyConfig `json:"policies"`
	Summary   bool                    `json:"summary"`
}

// recordedReadings inverts check_test.go's jsonReadings (MiB, null for
// Unknown); the sample time is the record's start plus t.
func recordedReadings(t *testing.T, m map[string]any, at time.Time) Readings {
	num := func(key string, scale float64) float64 {
		v, ok := m[key]
		if !ok {
			t.Fatalf("reading %q missing", key)
		}
		if v == nil {
			return Unknown
		}
		return v.(float64) * scale
	}
	r := Readings{Time: at, Device: m["device"].(string),
		MemTotal: num("mem_total_mib", mib), MemFree: num("mem_free_mib", mib), MemUsed: num("mem_used_mib", mib),
		OtherMemUsed: num("other_mem_mib", mib), NvMapUsed: num("nvmap_mib", mib),
		TempC: num("temp_c", 1), SlowdownC: num("slowdown_c", 1), ShutdownC: num("shutdown_c", 1),
		GPUUtil: num("gpu_util", 1), MemUtil: num("mem_util", 1), OtherUtil: num("other_util", 1),
		PowerW: num("power_w", 1), PowerLimitW: num("power_limit_w", 1), EventsKnown: m["events_known"].(bool)}
	if ev := m["events"].(string); ev != "none" {
		t.Fatalf("the record has clock events %q; teach this test to parse them", ev)
	}
	return r
}

func TestReplayH100Record(t *testing.T) {
	f, err := os.Open(h100Record)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var policies map[string]PolicyConfig
	states := map[string]State{}
	start := time.Date(2026, 11, 26, 8, 33, 0, 0, time.UTC)
	samples := 0
	waits := map[string]int{}
	for sc.Scan() {
		var ln recordedLine
		if err := json.Unmarshal(sc.Bytes(), &ln); err != nil {
			t.Fatalf("%s: %v", h100Record, err)
		}
		switch {
		case ln.Policies != nil:
			policies = ln.Policies
			continue
		case ln.Summary:
			continue
		}
		samples++
		r := recordedReadings(t, ln.Readings, start.Add(time.Duration(ln.T*float64(time.Second))))
		for name, want := range ln.Decisions {
			cfg, ok := policies[name]
			if !ok {
				t.Fatalf("t=%.1f: policy %q not in the record's header", ln.T, name)
			}
			d, st := Decide(r, cfg, states[name], r.Time)
			states[name] = st
			got := d.Action.String()
			if d.Reason != "" {
				got += "/" + d.Reason
			}
			// the record adds " tile=N (detail)" to every non-run decision
			wantHead, _, _ := strings.Cut(want, " ")
			if got != wantHead {
				t.Errorf("t=%.1f policy %s: Decide says %s, the H100 run said %q", ln.T, name, got, want)
			}
			if got != "run" {
				waits[name+" "+got]++
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if samples < 100 {
		t.Fatalf("%d samples in %s, expected 120", samples, h100Record)
	}
	// the record must exercise what it is kept for
	if waits["temp wait/temperature"] < 10 || waits["others wait/other_processes"] < 10 || waits["default wait/temperature"] != 0 {
		t.Fatalf("record no longer exercises the policies as expected: %v", waits)
	}
}
