package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/model"
	"hidiffd/trt"
)

// openTensorRT loads the cached engines, building them in a child process
// first when none match (or when the cached ones do not load: a corrupt
// file or one TensorRT refuses is deleted and rebuilt, never fatal).
func openTensorRT(ctx context.Context, cfg *config.Config, opts Options) (deblur.Backend, error) {
	log := opts.Log.With().Str("component", "tensorrt").Logger()
	m, err := model.Inspect(cfg.Model.Dir)
	if err != nil {
		return nil, cfg.Errorf("model.dir", "%w", err)
	}
	if cfg.Model.Tile == 0 {
		return nil, cfg.Errorf("model.tile", "0 (whole frames) cannot run on TensorRT: engines are built for a bounded tile size")
	}
	// Any multiple of the pad multiple up to the tile can arrive (frames
	// smaller than a tile, gpu.min_tile retries), so the profile spans
	// them all and is tuned for the tile itself.
	pad := max(m.Info.PadMultiple, 1)
	profile, err := trt.ProfileFor([]trt.Size{{H: cfg.Model.Tile, W: cfg.Model.Tile}}, trt.Size{H: pad, W: pad})
	if err != nil {
		return nil, cfg.Errorf("model.tile", "%w", err)
	}
	cache := trt.Cache{Dir: cfg.Backend.EngineDir}
	if err := cache.Clean(); err != nil {
		log.Warn().Err(err).Msg("engine cache: could not remove leftovers of interrupted builds")
	}
	topts := trt.Options{
		NvinferLibrary: cfg.Backend.TensorRTLibrary,
		Device:         cfg.GPU.Device,
		Log: func(level, msg string) {
			switch level {
			case "error":
				log.Error().Msg(msg)
			case "warn":
				log.Warn().Msg(msg)
			default:
				log.Debug().Msg(msg)
			}
		},
	}
	for built := false; ; built = true {
		b, key, err := trt.Load(m, cache, cfg.Backend.Precision, profile, topts)
		if err == nil {
			log.Info().Str("engines", b.Entry().Dir).Str("tensorrt", b.Describe()).Msg("TensorRT engines loaded")
			return guard(b, cfg, opts), nil
		}
		if !trt.NeedsBuild(err) || built || ctx.Err() != nil {
			return nil, fmt.Errorf("backend tensorrt (model.dir %s, backend.engine_dir %s): %w", cfg.Model.Dir, cfg.Backend.EngineDir, err)
		}
		if !errors.Is(err, trt.ErrNotCached) {
			log.Warn().Err(err).Str("entry", cache.EntryDir(key)).Msg("cached engine does not load; deleting it")
			if ierr := cache.Invalidate(key); ierr != nil {
				log.Error().Err(ierr).Msg("could not delete the engine that does not load")
			}
		}
		if cfg.Backend.OnMissingEngine == "fallback" {
			return nil, fmt.Errorf("%w: no usable engine in %s for %s (%v); build one with `hidiffd build-engine --config %s`",
				errUseFallback, cfg.Backend.EngineDir, cfg.Model.Dir, err, cfg.Path())
		}
		if err := buildEngine(ctx, cfg, profile, opts); err != nil {
			return nil, err
		}
	}
}

// buildEngine runs `hidiffd build-engine` as a child process: a build is
// minutes of GPU and CPU work inside TensorRT, and a crash or a hang there
// must cost the build, not the daemon. Its stderr lines (progress, and
// TensorRT's messages) are logged as they come and reported to
// opts.BuildProgress (the daemon keeps systemd's start timeout extended);
// after backend.build_timeout the child is stopped.
func buildEngine(ctx context.Context, cfg *config.Config, p trt.Profile, opts Options) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("building TensorRT engines: finding this executable: %w", err)
	}
	args := []string{"build-engine",
		"--model", cfg.Model.Dir, "--engine-dir", cfg.Backend.EngineDir, "--precision", cfg.Backend.Precision,
		"--workspace", strconv.Itoa(cfg.Backend.WorkspaceMiB), "--tile", p.Opt.String(), "--min", p.Min.String(),
		"--device", strconv.Itoa(cfg.GPU.Device)}
	if cfg.Backend.TensorRTLibrary != "" {
		args = append(args, "--nvinfer", cfg.Backend.TensorRTLibrary)
	}
	timeout := cfg.Backend.BuildTimeout.Duration
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(bctx, exe, args...)
	// SIGTERM first: the child then exits at once (nothing of its build is
	// worth keeping) and its staged folder is removed at the next start.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	// The child must not speak for the service: systemd's notify socket and
	// watchdog variables are ours.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "NOTIFY_SOCKET" && k != "WATCHDOG_USEC" && k != "WATCHDOG_PID" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}

	log := opts.Log.With().Str("component", "build-engine").Logger()
	log.Info().Str("cmd", exe+" "+strings.Join(args, " ")).Dur("timeout", timeout).
		Msg("no TensorRT engine for this model, GPU and tile; building one (this takes minutes)")
	if opts.BuildStarted != nil {
		opts.BuildStarted(timeout)
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("building TensorRT engines: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		forwardLines(stderr, func(line string) {
			log.Info().Msg(line)
			if opts.BuildProgress != nil {
				opts.BuildProgress()
			}
		})
	}()
	wg.Wait() // the pipe is read to its end before Wait closes it
	err = cmd.Wait()
	switch {
	case bctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("building TensorRT engines took longer than backend.build_timeout (%v); stopped", timeout)
	case ctx.Err() != nil:
		return fmt.Errorf("building TensorRT engines: %w", ctx.Err())
	case err != nil:
		return fmt.Errorf("building TensorRT engines failed (%v; the log above has its output)", err)
	}
	log.Info().Dur("took", time.Since(t0)).Str("result", strings.TrimSpace(stdout.String())).Msg("TensorRT engines built")
	return nil
}

// forwardLines calls fn for each line of r (long lines are cut, not lost).
func forwardLines(r io.Reader, fn func(string)) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 64<<10)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" {
			fn(line)
		}
	}
	// A line longer than the buffer stops the scanner: drain the rest so
	// the child never blocks on a full pipe.
	io.Copy(io.Discard, r)
}

// guard wraps an FP16 engine pair in deblur.Guard: a tile whose output is
// NaN/Inf or flat is recomputed on ONNX Runtime (opened on the first such
// tile) and counted in hidiffd_fp16_recomputed_total (when opts.Metrics is
// set).
func guard(b *trt.Backend, cfg *config.Config, opts Options) deblur.Backend {
	if b.Precision() != trt.FP16 {
		return b
	}
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hidiffd_fp16_recomputed_total",
		Help: "Network outputs of the FP16 TensorRT engine that were NaN/Inf (reason nonfinite) or flat (reason constant), " +
			"recomputed on ONNX Runtime (result recomputed) or, with no fallback, kept clamped (result unavailable).",
	}, []string{"reason", "result"})
	if opts.Metrics != nil {
		if err := opts.Metrics.Register(counter); err != nil {
			opts.Log.Warn().Err(err).Msg("fp16 guard metric not registered")
		}
	}
	for _, r := range []string{deblur.GuardNonFinite, deblur.GuardConstant} {
		counter.WithLabelValues(r, "recomputed")
		counter.WithLabelValues(r, "unavailable")
	}
	log := opts.Log.With().Str("component", "fp16-guard").Logger()
	return deblur.NewGuard(b, func() (deblur.Backend, error) {
		log.Warn().Msg("opening ONNX Runtime to recompute a bad FP16 output")
		return OpenONNXRuntime(cfg)
	}, func(ev deblur.GuardEvent) {
		result := "recomputed"
		if !ev.Recomputed {
			result = "unavailable"
		}
		counter.WithLabelValues(ev.Reason, result).Inc()
		e := log.Warn().Str("call", ev.Call).Str("reason", ev.Reason).Str("result", result)
		if ev.Err != nil {
			e = e.Err(ev.Err)
		}
		e.Msg("FP16 engine output was bad")
	})
}
