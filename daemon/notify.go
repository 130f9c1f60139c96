package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier speaks systemd's sd_notify protocol: one datagram per message to
// the unix socket named by $NOTIFY_SOCKET. It is written by hand (a dozen
// lines) rather than pulled in as a module. Without $NOTIFY_SOCKET (started
// by hand, or Type=simple) every method is a no-op, so callers never check.
//
// Protocol facts relied on: the socket is SOCK_DGRAM; a name starting with
// '@' is in the abstract namespace (the '@' stands for a leading NUL byte);
// several "KEY=VALUE" lines may share one datagram; systemd only listens to
// the main PID unless NotifyAccess=all.
type Notifier struct {
	mu   sync.Mutex
	addr *net.UnixAddr
}

// NewNotifier reads $NOTIFY_SOCKET. It returns a usable (possibly no-op)
// Notifier and an error only when the variable names something unusable.
func NewNotifier() (*Notifier, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return &Notifier{}, nil
	}
	if name[0] != '/' && name[0] != '@' {
		// systemd 254+ also allows vsock: addresses (for VMs); not ours.
		return &Notifier{}, fmt.Errorf("NOTIFY_SOCKET=%q: only unix socket paths and @abstract names are supported", name)
	}
	if name[0] == '@' {
		// Go maps a leading '@' to the abstract namespace's NUL itself; do it
		// here so the mapping does not rest on that convenience.
		name = "\x00" + name[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}, nil
}

// Enabled reports whether messages go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Send sends one datagram of newline-separated "KEY=VALUE" assignments. Each
// call dials afresh, as libsystemd does: a socket kept open would go stale if
// systemd re-executes and re-creates its notify socket.
func (n *Notifier) Send(state string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready tells systemd that start-up is complete (Type=notify).
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1\nSTATUS=" + status)
}

// Status sets the one-line status shown by systemctl status.
func (n *Notifier) Status(status string) error { return n.Send("STATUS=" + status) }

// Stopping tells systemd the drain has begun.
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1\nSTATUS=" + status)
}

// Reloading tells systemd a configuration reload has begun; Ready ends it.
// MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload to
// its request; older versions ignore it.
func (n *Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return n.Send("RELOADING=1")
	}
	usec := ts.Sec*1_000_000 + ts.Nsec/1000
	return n.Send("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Watchdog keeps the service's watchdog timer from firing.
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// ExtendTimeout asks systemd for d more time for the current phase (start-up
// or stop) measured from now: loading a big model may outlast TimeoutStartSec.
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	return n.Send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// WatchdogInterval is systemd's watchdog period ($WATCHDOG_USEC) if the
// watchdog is enabled for this process, else 0. $WATCHDOG_PID, when set,
// must be our PID: the variables may have been inherited from a parent.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		if pid, err := strconv.Atoi(p); err != nil || pid != os.Getpid() {
			return 0
		}
	}
	return time.Duration(usec) * time.Microsecond
}
