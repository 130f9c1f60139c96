package daemon

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// listenNotify plays systemd's end of sd_notify: a unixgram socket whose
// datagrams arrive on the returned channel, one message per datagram.
func listenNotify(t *testing.T, name string) (addr string, msgs <-chan string) {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return name, ch
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no sd_notify message within 5s")
		return ""
	}
}

func TestNotifierPathSocket(t *testing.T) {
	path, ch := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", path)
	n, err := NewNotifier()
	if err != nil || !n.Enabled() {
		t.Fatalf("notifier: %v enabled=%v", err, n.Enabled())
	}
	if err := n.Ready("idle"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); got != "READY=1\nSTATUS=idle" {
		t.Errorf("got %q", got)
	}
	n.ExtendTimeout(1500 * time.Millisecond)
	if got := recv(t, ch); got != "EXTEND_TIMEOUT_USEC=1500000" {
		t.Errorf("got %q", got)
	}
	n.Watchdog()
	if got := recv(t, ch); got != "WATCHDOG=1" {
		t.Errorf("got %q", got)
	}
	n.Stopping("draining")
	if got := recv(t, ch); got != "STOPPING=1\nSTATUS=draining" {
		t.Errorf("got %q", got)
	}
}

// TestNotifierAbstractSocket: systemd's own socket is a path, but containers
// and test harnesses use abstract names written with a leading '@'.
func TestNotifierAbstractSocket(t *testing.T) {
	name := "@hidiffd-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	_, ch := listenNotify(t, "\x00"+name[1:])
	t.Setenv("NOTIFY_SOCKET", name)
	n, err := NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Status("hello"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); got != "STATUS=hello" {
		t.Errorf("got %q", got)
	}
}

func TestNotifierDisabledAndBad(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := NewNotifier()
	if err != nil || n.Enabled() || n.Ready("x") != nil {
		t.Fatalf("no socket: want a silent no-op, got err=%v enabled=%v", err, n.Enabled())
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if _, err := NewNotifier(); err == nil || !strings.Contains(err.Error(), "vsock") {
		t.Errorf("vsock address: err=%v", err)
	}
	// A socket that went away is an error for the caller to log, not a crash.
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	n, _ = NewNotifier()
	if err := n.Watchdog(); err == nil {
		t.Error("send to a missing socket succeeded")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	if WatchdogInterval() != 0 {
		t.Error("no WATCHDOG_USEC: want 0")
	}
	t.Setenv("WATCHDOG_USEC", "30000000")
	if got := WatchdogInterval(); got != 30*time.Second {
		t.Errorf("got %v", got)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := WatchdogInterval(); got != 30*time.Second {
		t.Errorf("own pid: got %v", got)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if got := WatchdogInterval(); got != 0 {
		t.Errorf("another process's watchdog: got %v", got)
	}
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "abc")
	if WatchdogInterval() != 0 {
		t.Error("garbage WATCHDOG_USEC: want 0")
	}
}

// notifyLog records, in order, every message of a notify socket, so a test
// waits for the messages it expects instead of sleeping for them.
type notifyLog struct {
	t       *testing.T
	sock    string
	mu      sync.Mutex
	msgs    []string
	changed chan struct{} // closed (and replaced) at each new message
}

// recordNotify drains msgs (from listenNotify on sock) into a notifyLog.
func recordNotify(t *testing.T, sock string, msgs <-chan string) *notifyLog {
	l := &notifyLog{t: t, sock: sock, changed: make(chan struct{})}
	go func() {
		for m := range msgs {
			l.mu.Lock()
			l.msgs = append(l.msgs, m)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// all is every message so far.
func (l *notifyLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// wait blocks until cond holds for the messages so far, re-checking it at
// each new message; within bounds a test that would otherwise hang.
func (l *notifyLog) wait(within time.Duration, what string, cond func(msgs []string) bool) {
	l.t.Helper()
	if !l.until(within, cond) {
		l.t.Fatalf("timed out after %v waiting for %s; messages %q", within, what, l.all())
	}
}

// until is wait that reports a timeout instead of failing the test, for
// goroutines other than the test's.
func (l *notifyLog) until(within time.Duration, cond func(msgs []string) bool) bool {
	deadline := time.After(within)
	for {
		l.mu.Lock()
		ok, changed := cond(l.msgs), l.changed
		l.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// mark sends a marker datagram of the test's own to the socket and waits
// until it is recorded. Datagrams are received in the order they were sent,
// so every message the daemon sent before mark is before the marker, and
// the index of the marker splits the log into before and after.
func (l *notifyLog) mark(name string) int {
	l.t.Helper()
	c, err := net.Dial("unixgram", l.sock)
	if err != nil {
		l.t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("TEST_MARK=" + name)); err != nil {
		l.t.Fatal(err)
	}
	at := -1
	l.wait(5*time.Second, "marker "+name, func(msgs []string) bool {
		at = slices.Index(msgs, "TEST_MARK="+name)
		return at >= 0
	})
	return at
}

// countFrom is how many messages from index i on start with prefix.
func countFrom(msgs []string, i int, prefix string) (n int) {
	for _, m := range msgs[i:] {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}
