package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHealthReflectsDeadIntake (issue 12, D5): with inbox/ removed no new
// frame can be found. /readyz and /healthz say so with the reason, STATUS=
// carries it, the watchdog ping is withheld (systemd restarts the daemon,
// whose start recreates the folder); once the inbox is back, all is green
// again and frames flow.
func TestHealthReflectsDeadIntake(t *testing.T) {
	sock, msgs := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	in := start(t, setup{})
	in.waitReady()

	if err := os.RemoveAll(in.dir("inbox")); err != nil {
		t.Fatal(err)
	}
	in.eventually(10*time.Second, "/readyz 503 naming the inbox", func() bool {
		code, body := in.get("/readyz")
		return code == 503 && strings.Contains(body, "cannot scan the inbox") && strings.Contains(body, "no such file")
	})
	if code, body := in.get("/healthz"); code != 503 || !strings.Contains(body, "cannot scan the inbox") {
		t.Errorf("/healthz with a dead intake: %d %q", code, body)
	}
	if v := in.metric("hidiffd_ready"); v != "0" {
		t.Errorf("hidiffd_ready = %q with a dead intake", v)
	}
	in.eventually(10*time.Second, "STATUS= with the reason", func() bool {
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, "STATUS=") && strings.Contains(m, "cannot scan the inbox") {
					return true
				}
			default:
				return false
			}
		}
	})
	in.eventually(10*time.Second, "watchdog withheld", func() bool {
		return len(in.logs.lines("intake is failing; withholding watchdog ping")) > 0
	})

	if err := os.Mkdir(in.dir("inbox"), 0o750); err != nil {
		t.Fatal(err)
	}
	in.waitReady()
	if code, _ := in.get("/healthz"); code != 200 {
		t.Errorf("/healthz after the inbox came back: %d", code)
	}
	in.eventually(10*time.Second, "WATCHDOG=1 again", func() bool {
		for {
			select {
			case m := <-msgs:
				if m == "WATCHDOG=1" {
					return true
				}
			default:
				return false
			}
		}
	})
	in.drop("back.jpg", testJPEG(t, 32, 32))
	in.eventually(10*time.Second, "a frame after the inbox came back", func() bool { return in.has("done", "back.jpg") })
	in.stop()
}
