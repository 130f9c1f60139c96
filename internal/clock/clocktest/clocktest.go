// Package clocktest is a fake clock.Clock for tests: time moves only when
// the test calls Advance, so tests of the daemon's and the watcher's waits
// step through them instead of sleeping. Tests only (internal/archtest).
package clocktest

import (
	"sort"
	"sync"
	"time"
)

// Fake is a clock.Clock that moves only when a test calls Advance. Every
// wait goes through After, and code under test calls After right before it
// blocks, so each call is also a sign that it has handled what came before
// and is idle again: Turns lets a test wait for that instead of sleeping.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	afters  int           // After calls so far
	turn    chan struct{} // closed (and replaced) at the next After call
	last    chan time.Time
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// New is a fake clock at a fixed moment.
func New() *Fake {
	return &Fake{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), turn: make(chan struct{})}
}

// Now is the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After is time.After on the fake time: the channel receives once Advance
// has moved the clock d on (at once for d <= 0).
func (c *Fake) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.afters++
	close(c.turn)
	c.turn = make(chan struct{})
	ch := make(chan time.Time, 1)
	c.last = ch
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	return ch
}

// Turns is the number of After calls so far and a channel closed at the
// next one.
func (c *Fake) Turns() (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.afters, c.turn
}

// Advance moves the clock and fires every timer that is due. It reports
// whether the latest After's timer fired (the one a loop waits on when it
// is idle).
func (c *Fake) Advance(d time.Duration) (lastFired bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			keep = append(keep, w)
		} else {
			w.ch <- c.now
			lastFired = lastFired || w.ch == c.last
		}
	}
	c.waiters = keep
	return lastFired
}

// Deadlines lists the pending timers as offsets from now, soonest first.
func (c *Fake) Deadlines() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, w := range c.waiters {
		out = append(out, w.at.Sub(c.now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
