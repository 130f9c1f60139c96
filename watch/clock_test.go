package watch

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when a test calls Advance. Run calls
// After once per turn of its loop, right before it blocks, so every After
// call is also a sign that the watcher has handled what came before and is
// idle again: turns lets a test wait for that instead of sleeping.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	afters  int           // After calls so far
	turn    chan struct{} // closed (and replaced) at the next After call
	last    chan time.Time
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), turn: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
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
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

// turns is the number of After calls so far and a channel closed at the
// next one.
func (c *fakeClock) turns() (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.afters, c.turn
}

// Advance moves the clock and fires every timer that is due. It reports
// whether the latest After's timer fired (the one Run is waiting on when
// idle).
func (c *fakeClock) Advance(d time.Duration) (lastFired bool) {
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

// TestFakeClockTurns checks the fake itself: timers fire at their time,
// never before, and each After is a turn.
func TestFakeClockTurns(t *testing.T) {
	c := newFakeClock()
	n, next := c.turns()
	a := c.After(time.Second)
	select {
	case <-next:
	default:
		t.Fatal("After did not close the turn channel")
	}
	if m, _ := c.turns(); m != n+1 {
		t.Fatalf("turns %d after one After, want %d", m, n+1)
	}
	if c.Advance(999 * time.Millisecond) {
		t.Fatal("fired early")
	}
	select {
	case <-a:
		t.Fatal("fired early")
	default:
	}
	if !c.Advance(time.Millisecond) {
		t.Fatal("latest timer not reported as fired")
	}
	if got := <-a; !got.Equal(c.Now()) {
		t.Fatalf("fired with %v, want %v", got, c.Now())
	}
}
