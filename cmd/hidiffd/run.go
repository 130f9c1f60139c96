package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"hidiffd/backend"
	"hidiffd/config"
	"hidiffd/daemon"
	"hidiffd/trt"
)

func init() {
	register(&Command{
		Name:    "run",
		Args:    "[--config FILE] [--backend onnxruntime|tensorrt|auto]",
		Summary: "run the daemon: watch the spool's inbox/ and deblur every frame dropped there",
		Run:     runDaemon,
	})
}

func runDaemon(ctx context.Context, args []string) int {
	fs := newFlagSet(commands["run"])
	cfgPath := fs.String("config", config.DefaultPath, "configuration file (TOML; see config.toml for every key)")
	kind := fs.String("backend", "", "backend.kind for this run, over the file's (onnxruntime, tensorrt or auto); a SIGHUP keeps it")
	if rest, st := parseFlags(fs, args); st >= 0 {
		return st
	} else if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "hidiffd run: unexpected argument %q\n", rest[0])
		return 2
	}
	amend, err := backendOverride(*kind)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd run: %v\n", err)
		return 2
	}
	// Load here, not in the daemon, so that a bad file is reported on
	// stderr in plain words before any logger exists (journald shows both).
	cfg, err := config.Load(*cfgPath)
	if err == nil && amend != nil {
		err = amend(cfg)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd: configuration refused:\n%v\n", err)
		return 1
	}
	err = daemon.Run(ctx, daemon.Options{ConfigPath: *cfgPath, Config: cfg, Amend: amend, Version: Version()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd: %v\n", err)
		return 1
	}
	return 0
}

// backendOverride checks run's --backend value ("" is none) and returns
// what sets it over each loaded configuration (daemon.Options.Amend), or
// nil. A binary without TensorRT refuses "tensorrt" here, naming the flag,
// as deblur and eval do.
func backendOverride(kind string) (func(*config.Config) error, error) {
	switch kind {
	case "":
		return nil, nil
	case backend.KindONNXRuntime, backend.KindAuto:
	case backend.KindTensorRT:
		if err := trt.Available(); err != nil {
			return nil, errors.New(backend.NotBuilt("--backend tensorrt"))
		}
	default:
		return nil, fmt.Errorf("--backend %q: want onnxruntime, tensorrt or auto", kind)
	}
	return func(cfg *config.Config) error {
		cfg.Backend.Kind = kind
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("with --backend %s: %w", kind, err)
		}
		return nil
	}, nil
}
