package backend

import (
	"strings"
	"testing"

	"hidiffd/config"
	"hidiffd/trt"
)

func TestCheckBuilt(t *testing.T) {
	cfg, err := config.Parse([]byte("[backend]\nkind = \"tensorrt\"\n"), "/etc/hidiffd/c.toml")
	if err != nil {
		t.Fatal(err)
	}
	err = CheckBuilt(cfg)
	if trt.Available() == nil {
		if err != nil {
			t.Errorf("built with TensorRT: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "c.toml:2: backend.kind") || !strings.Contains(err.Error(), "rebuild with -tags tensorrt") {
		t.Errorf("err = %v", err)
	}
	cfg.Backend.Kind = "auto"
	if err := CheckBuilt(cfg); err != nil {
		t.Errorf("auto: %v", err)
	}
}

func TestForwardLines(t *testing.T) {
	long := strings.Repeat("x", 70<<10)
	in := "build-engine: building prior.engine\n\n  tensorrt: [W] slow  \n" + long + "\nafter\n"
	var got []string
	forwardLines(strings.NewReader(in), func(s string) { got = append(got, s) })
	if len(got) < 2 || got[0] != "build-engine: building prior.engine" || got[1] != "tensorrt: [W] slow" {
		t.Errorf("lines = %q", got)
	}
}
