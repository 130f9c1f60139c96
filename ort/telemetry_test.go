package ort

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// telemetryChild is set in the environment of the child process that
// TestTelemetryOff starts: the child only loads ONNX Runtime and a model.
const telemetryChild = "HIDIFFD_TEST_TELEMETRY_CHILD"

// TestTelemetryOff loads ONNX Runtime in a child process with a fresh HOME:
// by default nothing may appear under HOME/.cache/Microsoft (ONNX Runtime's
// telemetry device id and event database); with ORT_DISABLE_TELEMETRY=0 set
// by the user, hidiffd leaves the choice alone (which also shows that this
// check would see the files).
func TestTelemetryOff(t *testing.T) {
	if os.Getenv(telemetryChild) == "1" {
		openTiny(t, nil)
		return
	}
	testOptions(t) // skips without the library
	run := func(extra ...string) bool {
		t.Helper()
		home := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestTelemetryOff$", "-test.count=1")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, TelemetryEnv+"=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, append(extra, "HOME="+home, telemetryChild+"=1")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child %v: %v\n%s", extra, err, out)
		}
		_, err := os.Stat(filepath.Join(home, ".cache", "Microsoft"))
		return err == nil
	}
	if run() {
		t.Errorf("ONNX Runtime wrote HOME/.cache/Microsoft although hidiffd sets %s=1", TelemetryEnv)
	}
	if !run(TelemetryEnv + "=0") {
		t.Logf("this ONNX Runtime keeps no telemetry files even with %s=0", TelemetryEnv)
	}
}
