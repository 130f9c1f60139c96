package trt

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// worker runs every call into the shim for one runtime on one goroutine
// locked to one OS thread. Why: a CUDA context is current per thread, and
// the shim sets the runtime's context once per call on whatever thread
// calls it; with one thread that is always the same thread, so the set is
// a no-op after the first call, and TensorRT's execution contexts, which
// are not safe for concurrent use, see one caller at a time. Go callers on
// any goroutine submit closures and wait.
type worker struct {
	mu     sync.RWMutex // read-held by submitters; stop takes it to close reqs
	closed bool
	reqs   chan func()
	exited chan struct{}
	tid    int // the locked thread's id (tests check calls land on it)
}

func startWorker() *worker {
	w := &worker{reqs: make(chan func()), exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		// Never unlocked: when the loop ends the goroutine exits still
		// locked, and Go then ends the thread too, so no other goroutine
		// ever runs on a thread that had our CUDA context bound.
		w.tid = unix.Gettid()
		close(ready)
		for f := range w.reqs {
			f()
		}
		close(w.exited)
	}()
	<-ready
	return w
}

// do runs f on the worker thread and waits for it. A panic in f is carried
// back and re-raised in the caller, so it does not take the worker down.
func (w *worker) do(f func()) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	done := make(chan any, 1)
	w.reqs <- func() {
		defer func() { done <- recover() }()
		f()
	}
	if p := <-done; p != nil {
		panic(fmt.Sprintf("trt: panic on the worker thread: %v", p))
	}
	return nil
}

// stop ends the worker after the calls in flight; later do calls return
// ErrClosed. A second stop is a no-op.
func (w *worker) stop() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	<-w.exited
}
