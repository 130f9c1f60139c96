package clocktest

import (
	"testing"
	"time"
)

// TestFakeClockTurns checks the fake itself: timers fire at their time,
// never before, and each After is a turn.
func TestFakeClockTurns(t *testing.T) {
	c := New()
	n, next := c.Turns()
	a := c.After(time.Second)
	select {
	case <-next:
	default:
		t.Fatal("After did not close the turn channel")
	}
	if m, _ := c.Turns(); m != n+1 {
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
