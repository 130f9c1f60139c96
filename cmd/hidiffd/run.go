package main

import (
	"context"
	"fmt"
	"os"

	"hidiffd/config"
	"hidiffd/daemon"
)

func init() {
	register(&Command{
		Name:    "run",
		Args:    "[--config FILE]",
		Summary: "run the daemon: watch the spool's inbox/ and deblur every frame dropped there",
		Run:     runDaemon,
	})
}

func runDaemon(ctx context.Context, args []string) int {
	fs := newFlagSet(commands["run"])
	cfgPath := fs.String("config", config.DefaultPath, "configuration file (TOML; see config.toml for every key)")
	if rest, st := parseFlags(fs, args); st >= 0 {
		return st
	} else if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "hidiffd run: unexpected argument %q\n", rest[0])
		return 2
	}
	// Load here, not in the daemon, so that a bad file is reported on
	// stderr in plain words before any logger exists (journald shows both).
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd: configuration refused:\n%v\n", err)
		return 1
	}
	err = daemon.Run(ctx, daemon.Options{ConfigPath: *cfgPath, Config: cfg, Version: Version()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "hidiffd: %v\n", err)
		return 1
	}
	return 0
}
