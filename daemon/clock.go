package daemon

import "time"

// Clock is the time source of the daemon's own waits (the retry backoff and
// the pause of intake), so tests can drive them with a fake clock instead
// of sleeping. Production uses the system clock.
type Clock interface {
	Now() time.Time
	// After is time.After: the channel receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
