// Package backend is backend selection, in one place for every command:
// from a configuration's [backend] keys (kind, precision, engine cache) it
// opens ONNX Runtime or TensorRT for the model, builds missing TensorRT
// engines in a child process, and wraps FP16 engines in the output guard.
// `hidiffd run` (through daemon/), `hidiffd deblur` and `hidiffd eval` all
// call Open, so the three run a model the same way. It knows nothing of the
// spool, systemd or HTTP: what the daemon does while an engine builds is a
// hook (Options).
package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"hidiffd/config"
	"hidiffd/deblur"
	"hidiffd/ort"
	"hidiffd/trt"
)

// Kinds are the values of backend.kind (and of the commands' --backend).
const (
	KindAuto        = "auto"
	KindONNXRuntime = "onnxruntime"
	KindTensorRT    = "tensorrt"
)

// Options are what Open needs besides the configuration. The zero value
// works: no logs, no metrics, no hooks.
type Options struct {
	// Log receives the selection's decisions, TensorRT's messages and an
	// engine build's progress.
	Log zerolog.Logger
	// Metrics, if set, gets hidiffd_fp16_recomputed_total (FP16 engines
	// only). The daemon wraps its registry with a worker label.
	Metrics prometheus.Registerer
	// BuildStarted is called when an engine build starts, with the time it
	// may take (backend.build_timeout): the daemon says so in STATUS= and
	// keeps systemd's start timeout extended that long.
	BuildStarted func(timeout time.Duration)
	// BuildProgress is called for every line the build prints (each is
	// logged already): the build is alive.
	BuildProgress func()
}

// errUseFallback: TensorRT has no usable engine and backend.on_missing_engine
// says to run on ONNX Runtime meanwhile.
var errUseFallback = errors.New("falling back to ONNX Runtime")

// NotBuilt explains, for a person, that this binary has no TensorRT and how
// to get one that has; what (a flag or a key) names the choice that asked
// for it.
func NotBuilt(what string) string {
	return what + ": this hidiffd binary was built without TensorRT (" + trt.ErrNotBuilt.Error() + "): " +
		"install the TensorRT variant of the package (its version ends in +tensorrt), or build one on a machine with TensorRT's headers " +
		"with `make build-tensorrt` (go build -tags tensorrt); or choose onnxruntime"
}

// CheckBuilt refuses backend.kind = "tensorrt" in a binary built without
// TensorRT. Callers check it first, before anything else is set up: the
// configuration can only be judged against the binary here, and it is a
// mistake worth a clear line.
func CheckBuilt(cfg *config.Config) error {
	if cfg.Backend.Kind != KindTensorRT {
		return nil
	}
	if err := trt.Available(); err != nil {
		return cfg.Errorf("backend.kind", "%w", err)
	}
	return nil
}

// Open is backend selection (backend.kind):
//
//   - "onnxruntime": ONNX Runtime on the CPU (OpenONNXRuntime).
//   - "tensorrt": the TensorRT engines for this model, GPU (gpu.device),
//     TensorRT and tile, from the engine cache, built first if missing (or
//     ONNX Runtime, per backend.on_missing_engine). Refused in a binary
//     built without it.
//   - "auto": "tensorrt" when the binary has it and it works here (a GPU,
//     the libraries, an engine cached or built), else "onnxruntime".
func Open(ctx context.Context, cfg *config.Config, opts Options) (deblur.Backend, error) {
	switch cfg.Backend.Kind {
	case KindONNXRuntime:
		return OpenONNXRuntime(cfg)
	case KindTensorRT:
		if err := CheckBuilt(cfg); err != nil {
			return nil, err
		}
		b, err := openTensorRT(ctx, cfg, opts)
		if errors.Is(err, errUseFallback) {
			opts.Log.Warn().Err(err).Msg("TensorRT engine missing; running on ONNX Runtime (backend.on_missing_engine = \"fallback\")")
			return OpenONNXRuntime(cfg)
		}
		return b, err
	}
	if trt.Available() == nil {
		b, err := openTensorRT(ctx, cfg, opts)
		if err == nil || ctx.Err() != nil {
			return b, err
		}
		opts.Log.Warn().Err(err).Msg("backend.kind = \"auto\": TensorRT not usable here; using ONNX Runtime")
	}
	return OpenONNXRuntime(cfg)
}

// OpenONNXRuntime opens ONNX Runtime on the CPU for cfg's model, with
// backend.threads intra-op threads: what backend.kind "onnxruntime"
// selects, and what "auto", a TensorRT fallback and the FP16 guard use.
func OpenONNXRuntime(cfg *config.Config) (deblur.Backend, error) {
	if st, err := os.Stat(cfg.Model.Dir); err != nil {
		return nil, cfg.Errorf("model.dir", "%w", err)
	} else if !st.IsDir() {
		return nil, cfg.Errorf("model.dir", "not a folder")
	}
	b, err := ort.Open(cfg.Model.Dir, ort.Options{
		LibraryPath:    cfg.Backend.OnnxruntimeLibrary,
		IntraOpThreads: cfg.Backend.Threads,
	})
	if err != nil {
		return nil, fmt.Errorf("backend onnxruntime (model.dir %s): %w", cfg.Model.Dir, err)
	}
	return b, nil
}
