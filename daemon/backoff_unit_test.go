package daemon

import (
	"testing"
	"time"

	"hidiffd/internal/clock/clocktest"
)

// TestBackoffState: the pause doubles with output failures and a success
// ends it at once; a frame's own wait doubles with its own failures and is
// not shortened by another frame's success.
func TestBackoffState(t *testing.T) {
	clock := clocktest.New()
	b := &backoff{clock: clock}
	const s = time.Second
	if w, _ := b.paused(); w > 0 {
		t.Fatal("paused at start")
	}
	for i, want := range []time.Duration{s, 2 * s, 4 * s, 8 * s, 8 * s} {
		if got := b.fail("a.jpg", s, 8*s); got != want {
			t.Errorf("failure %d: wait %v, want %v", i+1, got, want)
		}
		if w, _ := b.paused(); w != want {
			t.Errorf("failure %d: pause %v, want %v", i+1, w, want)
		}
	}
	_, lifted := b.paused()
	b.succeeded("b.jpg")
	select {
	case <-lifted:
	default:
		t.Error("a success did not signal the end of the pause")
	}
	if w, _ := b.paused(); w > 0 {
		t.Errorf("still paused %v after a success", w)
	}
	if w := b.due("a.jpg"); w != 8*s {
		t.Errorf("a.jpg due in %v after b.jpg's success, want its own 8s", w)
	}
	// After the success the pause starts over, a.jpg's own wait does not.
	if got := b.fail("a.jpg", s, 8*s); got != 8*s {
		t.Errorf("a.jpg's next wait %v, want 8s", got)
	}
	if w, _ := b.paused(); w != s {
		t.Errorf("pause %v after the reset, want 1s", w)
	}
	clock.Advance(8 * s)
	if w := b.due("a.jpg"); w > 0 {
		t.Errorf("a.jpg still waits %v", w)
	}
	b.renamed("a.jpg", "a.1.jpg")
	b.fail("a.1.jpg", s, 8*s)
	if w := b.due("a.1.jpg"); w != 8*s {
		t.Errorf("renamed frame lost its history: due %v", w)
	}
	b.forget("a.1.jpg")
	if w := b.due("a.1.jpg"); w != 0 {
		t.Errorf("forgotten frame due %v", w)
	}
}
