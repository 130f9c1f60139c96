package daemon

import (
	"sync"
	"time"

	"hidiffd/internal/clock"
)

// backoff is the daemon's one retry state, for transient failures on the
// output side (disk full, read-only or missing out/, a failed move):
//
//   - the pause: while the output side is failing, no frame is claimed.
//     It starts at retry.initial_backoff and doubles with every further
//     failure up to retry.max_backoff; a success ends it at once (the disk
//     is evidently fine again) and resets the doubling.
//   - each failed frame's own earliest retry: a frame returned to inbox/ is
//     not claimed again before the backoff logged for it, even when another
//     frame's success ended the pause (a frame whose own output keeps
//     failing does not re-run the network in a loop). Its wait doubles
//     with its own failures; it is never shorter than the pause.
//
// Frames are known by their name in inbox/. The zero value is not ready:
// the daemon sets clock.
type backoff struct {
	clock clock.Clock

	mu     sync.Mutex
	fails  int                     // output-side failures since the last success
	until  time.Time               // no claim before this (zero: not paused)
	lifted chan struct{}           // closed when a success ends the pause early
	frames map[string]frameBackoff // frames back in inbox/ for a retry
}

type frameBackoff struct {
	fails     int
	notBefore time.Time
}

// maxTracked bounds the frames remembered; beyond it the one due soonest is
// forgotten (it is due, or nearly: forgetting it only lets it go at once).
const maxTracked = 4096

// step is initial doubled n-1 times, at most limit.
func step(initial, limit time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// fail records a transient failure of frame name (its original is, or stays,
// in inbox/ under that name) and returns how long until it is tried again:
// the wait to log.
func (b *backoff) fail(name string, initial, limit time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	b.fails++
	pause := step(initial, limit, b.fails)
	if u := now.Add(pause); u.After(b.until) {
		b.until = u
	}
	if b.frames == nil {
		b.frames = map[string]frameBackoff{}
	}
	f := b.frames[name]
	f.fails++
	wait := max(step(initial, limit, f.fails), pause)
	f.notBefore = now.Add(wait)
	b.frames[name] = f
	if len(b.frames) > maxTracked {
		soonest := ""
		for n, fb := range b.frames {
			if soonest == "" || fb.notBefore.Before(b.frames[soonest].notBefore) {
				soonest = n
			}
		}
		delete(b.frames, soonest)
	}
	return wait
}

// succeeded ends the pause and forgets the frame's own backoff (names: every
// name the frame had).
func (b *backoff) succeeded(names ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails = 0
	if !b.until.IsZero() {
		b.until = time.Time{}
		if b.lifted != nil {
			close(b.lifted)
			b.lifted = nil
		}
	}
	for _, n := range names {
		delete(b.frames, n)
	}
}

// forget drops a frame's own backoff (it failed for good, or vanished).
func (b *backoff) forget(names ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range names {
		delete(b.frames, n)
	}
}

// renamed follows a frame that went back to inbox/ under another name.
func (b *backoff) renamed(from, to string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f, ok := b.frames[from]; ok && from != to {
		delete(b.frames, from)
		b.frames[to] = f
	}
}

// paused returns how much longer the pause lasts (<= 0: not paused) and a
// channel closed if a success ends it before then.
func (b *backoff) paused() (time.Duration, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until.IsZero() {
		return 0, nil
	}
	w := b.until.Sub(b.clock.Now())
	if w <= 0 {
		return w, nil
	}
	if b.lifted == nil {
		b.lifted = make(chan struct{})
	}
	return w, b.lifted
}

// due returns how much longer frame name must wait before its claim (<= 0:
// it may go now).
func (b *backoff) due(name string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, ok := b.frames[name]
	if !ok {
		return 0
	}
	return f.notBefore.Sub(b.clock.Now())
}
