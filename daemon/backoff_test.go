package daemon

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"hidiffd/internal/clock/clocktest"
)

// retryConfig is the spool and retry configuration of the backoff tests:
// the fake clock drives the backoff, so its durations can be real ones.
func retryConfig(initial, max string) string {
	return "[retry]\ninitial_backoff = \"" + initial + "\"\nmax_backoff = \"" + max + "\"\n"
}

// TestRetryNotBeforeItsBackoff (issue 12, D3): a frame whose output cannot
// be written goes back to inbox/ and is claimed again exactly when the
// backoff it logged has passed on the clock, never sooner (every retry runs
// the network again), and the backoff doubles: 10s, 20s, 40s.
func TestRetryNotBeforeItsBackoff(t *testing.T) {
	clock := clocktest.New()
	var attempts atomic.Int32
	fb := &fakeBackend{onTransform: func(ctx context.Context) error { attempts.Add(1); return nil }}
	in := start(t, setup{backend: fb, clock: clock, toml: retryConfig("10s", "80s")})
	in.waitReady()
	unblock := blockWrites(t, in.dir("out"))

	in.drop("a.jpg", testJPEG(t, 40, 32))
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		n := int32(i + 1)
		// The frame failed once more, went back to inbox/, and the daemon
		// now waits on the clock, or (the bug) has run it again already.
		in.eventually(10*time.Second, fmt.Sprintf("retry %d logged and waited on", n), func() bool {
			ret, _ := strconv.Atoi(in.metric("hidiffd_images_retried_total"))
			return attempts.Load() > n || (int32(ret) == n && len(clock.Deadlines()) > 0 && in.has("inbox", "a.jpg"))
		})
		if got := attempts.Load(); got != n {
			t.Fatalf("the network ran %d times before the clock moved, want %d: the frame was retried before its backoff", got, n)
		}
		lines := in.logs.lines("transient error; original returned to inbox/ for a retry")
		if len(lines) != int(n) {
			t.Fatalf("%d retry lines, want %d", len(lines), n)
		}
		logged, _ := time.ParseDuration(fmt.Sprint(lines[n-1]["backoff"]) + "ms")
		if logged != want {
			t.Errorf("retry %d: logged backoff %v, want %v", n, logged, want)
		}
		if d := clock.Deadlines(); d[len(d)-1] != want {
			t.Errorf("retry %d: the daemon waits %v, logged %v", n, d, want)
		}
		clock.Advance(want - time.Millisecond)
		if got := attempts.Load(); got != n {
			t.Fatalf("retried %v early", time.Millisecond)
		}
		if n == 3 {
			unblock()
		}
		clock.Advance(time.Millisecond)
	}
	in.eventually(10*time.Second, "a.jpg processed once out/ is writable", func() bool { return in.has("done", "a.jpg") })
	if got := attempts.Load(); got != 4 {
		t.Errorf("the network ran %d times, want 4 (three failures, one success)", got)
	}
	in.stop()
}

// TestSuccessEndsTheOutputPause (issue 12, D3): after a transient failure
// paused intake, a success (here the frame decoded ahead, which reaches the
// writer once the disk is fine again) ends the pause at once: a new frame
// goes through without waiting on the clock. The failed frame itself still
// waits for its own backoff.
func TestSuccessEndsTheOutputPause(t *testing.T) {
	clock := clocktest.New()
	entered := make(chan int, 8)
	proceed := make(chan struct{}, 8)
	var calls atomic.Int32
	fb := &fakeBackend{onTransform: func(ctx context.Context) error {
		n := int(calls.Add(1))
		if n <= 2 { // a.jpg, then b.jpg: held until the test lets them go
			entered <- n
			<-proceed
		}
		return nil
	}}
	in := start(t, setup{backend: fb, clock: clock, toml: retryConfig("1m", "1m")})
	in.waitReady()
	unblock := blockWrites(t, in.dir("out"))

	in.drop("a.jpg", testJPEG(t, 40, 32))
	<-entered // a.jpg in the network
	in.drop("b.jpg", testJPEG(t, 32, 40))
	in.eventually(10*time.Second, "b.jpg claimed (decoded ahead)", func() bool { return in.has("work", "b.jpg") })
	proceed <- struct{}{} // a.jpg fails to write: the output side pauses
	in.eventually(10*time.Second, "a.jpg back in inbox/", func() bool {
		return in.metric("hidiffd_images_retried_total") == "1" && in.has("inbox", "a.jpg")
	})
	unblock()
	<-entered // b.jpg in the network
	proceed <- struct{}{}
	in.eventually(10*time.Second, "b.jpg written", func() bool { return in.has("done", "b.jpg") })

	in.drop("c.jpg", testJPEG(t, 24, 24))
	in.eventually(10*time.Second, "c.jpg written without the clock moving", func() bool { return in.has("done", "c.jpg") })
	if in.has("done", "a.jpg") || calls.Load() != 3 {
		t.Fatalf("a.jpg was retried before its backoff (calls %d)", calls.Load())
	}
	clock.Advance(time.Minute)
	in.eventually(10*time.Second, "a.jpg written after its backoff", func() bool { return in.has("done", "a.jpg") })
	in.stop()
}
