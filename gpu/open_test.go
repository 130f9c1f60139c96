package gpu

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// On a machine without the NVIDIA driver (this project's CI), "auto" must
// fall back to none without an error, and an explicit "nvml" must say
// clearly why it cannot work. A nonexistent library path makes the test
// independent of whether this machine happens to have a driver.
func TestOpenWithoutDriver(t *testing.T) {
	lr := &logRec{}
	empty := t.TempDir() // no Jetson either
	m, err := Open(Options{Kind: KindAuto, Root: empty, NVMLLibrary: "/nonexistent/libnvidia-ml.so.1", Log: lr.log})
	if err != nil {
		t.Fatalf("auto without a driver: %v", err)
	}
	if m.Name() != KindNone {
		t.Fatalf("auto picked %q, want none", m.Name())
	}
	r, err := m.Read(context.Background())
	if err != nil || Known(r.TempC) || Known(r.MemFree) || r.EventsKnown {
		t.Errorf("none reads %+v, %v", r, err)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if lr.count("gpu monitor: none") != 1 || lr.count("nvml") != 1 {
		t.Errorf("auto should log once why it chose none: %q", lr.lines)
	}

	_, err = Open(Options{Kind: KindNVML, Root: empty, NVMLLibrary: "/nonexistent/libnvidia-ml.so.1"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("explicit nvml without a driver: %v", err)
	}
	wants := []string{`gpu.monitor = "nvml"`, "libnvidia-ml.so.1 not found", "no NVIDIA driver"}
	if strings.Contains(err.Error(), "needs a cgo build") { // CGO_ENABLED=0: NVML is not compiled in
		wants = wants[:1]
	}
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// The same with the default library name, as the daemon opens it. Skipped
// where a driver is installed (the GPU check covers that machine).
func TestOpenDefaultLibraryOnThisMachine(t *testing.T) {
	m, err := Open(Options{Kind: KindNVML})
	if err == nil {
		m.Close()
		t.Skip("this machine has a working NVML")
	}
	t.Logf("explicit nvml: %v", err)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("want ErrUnavailable: %v", err)
	}
	m, err = Open(Options{Kind: KindAuto, Root: t.TempDir()})
	if err != nil || m.Name() != KindNone {
		t.Fatalf("auto: %v, %v", m, err)
	}
}

func TestOpenKinds(t *testing.T) {
	if m, err := Open(Options{Kind: KindNone}); err != nil || m.Name() != KindNone {
		t.Errorf("none: %v %v", m, err)
	}
	if _, err := Open(Options{Kind: "cuda"}); err == nil || !strings.Contains(err.Error(), `want "auto"`) {
		t.Errorf("unknown kind: %v", err)
	}
	// Auto on a Jetson (no NVML): the sysfs reader.
	tr := orinTree(t)
	m, err := Open(Options{Kind: KindAuto, Root: tr.root, NVMLLibrary: "/nonexistent/libnvidia-ml.so.1"})
	if err != nil || m.Name() != KindJetson {
		t.Errorf("auto on a Jetson tree: %v %v", m, err)
	}
}

func TestClockEventsString(t *testing.T) {
	if s := (EventThermal | EventHWSlowdown).String(); s != "thermal+hw_slowdown" {
		t.Error(s)
	}
	if s := ClockEvents(0).String(); s != "none" {
		t.Error(s)
	}
}
