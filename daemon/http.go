package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Health is what /healthz and /readyz answer from.
//
//   - /healthz: 200 while the process can do its job, 503 with the reason
//     when it cannot and a restart may help: the same condition as the
//     systemd watchdog (the intake cannot scan the inbox; a frame loop has
//     made no progress for a watchdog period).
//   - /readyz: 200 once the spool is recovered and the model loaded, while
//     /healthz is 200 and the daemon is not draining; 503 with the reason
//     otherwise.
type Health struct {
	ready  atomic.Bool
	reason atomic.Value                  // string: why not ready
	check  atomic.Pointer[func() string] // "" when healthy, else why not
	// degraded says which workers stopped ("" none): /readyz stays 200
	// while one runs, and says so on a second line.
	degraded atomic.Pointer[func() string]
}

// SetCheck installs the live health check ("" healthy, else the reason).
func (h *Health) SetCheck(f func() string) { h.check.Store(&f) }

// SetDegraded installs the report of stopped workers for /readyz.
func (h *Health) SetDegraded(f func() string) { h.degraded.Store(&f) }

// Problem runs the live check: "" when healthy.
func (h *Health) Problem() string {
	if f := h.check.Load(); f != nil {
		return (*f)()
	}
	return ""
}

// Serving reports what /readyz says: ready and healthy.
func (h *Health) Serving() bool { return h.Ready() && h.Problem() == "" }

// SetReady marks the daemon ready (model loaded, spool recovered).
func (h *Health) SetReady() { h.ready.Store(true) }

// SetNotReady marks it not ready and says why ("loading model", "draining").
func (h *Health) SetNotReady(why string) {
	h.reason.Store(why)
	h.ready.Store(false)
}

// Ready reports readiness.
func (h *Health) Ready() bool { return h.ready.Load() }

// Handler serves /metrics, /healthz and /readyz.
func (h *Health) Handler(m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	// /healthz is not tied to the model (a restart cannot fix a missing
	// model): only to what the watchdog checks.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if p := h.Problem(); p != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "unhealthy:", p)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		why := ""
		if !h.Ready() {
			why, _ = h.reason.Load().(string)
			if why == "" {
				why = "starting"
			}
		} else {
			why = h.Problem()
		}
		if why == "" {
			fmt.Fprintln(w, "ready")
			if f := h.degraded.Load(); f != nil {
				if g := (*f)(); g != "" {
					fmt.Fprintln(w, "degraded:", g)
				}
			}
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", why)
	})
	return mux
}

// serveHTTP listens on addr and serves h until ctx ends; it returns once
// listening (or failing to), so a port in use stops the start-up with a
// clear error. The returned address is the one bound (useful with port 0).
func serveHTTP(ctx context.Context, addr string, h http.Handler, log zerolog.Logger) (net.Addr, <-chan struct{}, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("http.listen %q: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), done, nil
}
