// Package clock is the time source of every wait the daemon and the
// watcher make (retry backoff, intake pauses, settle periods, rescans), so
// that tests drive them with a fake clock instead of sleeping. Production
// uses System.
package clock

import "time"

// Clock is a time source. Every wait goes through After, so a fake can
// step time forward and release exactly the waits that are due.
type Clock interface {
	Now() time.Time
	// After is time.After: the channel receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// System is the real clock.
type System struct{}

// Now is time.Now.
func (System) Now() time.Time { return time.Now() }

// After is time.After.
func (System) After(d time.Duration) <-chan time.Time { return time.After(d) }
