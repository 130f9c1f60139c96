// Command hidiffd deblurs camera images: `hidiffd run` is the daemon,
// `hidiffd deblur` a one-shot tool, `hidiffd doctor` says what this machine
// can run, `hidiffd version` what was built. Each subcommand lives in its own
// file and registers itself (see command.go), so adding one does not touch
// this file.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	os.Exit(dispatch(context.Background(), os.Args[1:]))
}

// dispatch runs the subcommand named by args[0] and returns the exit status.
func dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				return c.Run(ctx, []string{"-h"})
			}
		}
		usage(os.Stdout)
		return 0
	case "-version", "--version":
		args[0] = "version"
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(os.Stderr, "hidiffd: unknown command %q\n\n", args[0])
		usage(os.Stderr)
		return 2
	}
	return c.Run(ctx, args[1:])
}
