package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Command is one subcommand. A new one (eval, build-engine) is a new file
// whose init calls register; main.go and the other commands stay untouched.
type Command struct {
	Name    string // as typed: "run", "deblur"
	Args    string // synopsis after the name, for usage: "[--config FILE]"
	Summary string // one line for the command list
	// Run gets the arguments after the name and returns the exit status
	// (0 ok, 1 failure, 2 usage error).
	Run func(ctx context.Context, args []string) int
}

var commands = map[string]*Command{}

// register adds a command; a duplicate name is a programming error.
func register(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("hidiffd: command registered twice: " + c.Name)
	}
	commands[c.Name] = c
}

func lookup(name string) *Command { return commands[name] }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: hidiffd COMMAND [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].Summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "`hidiffd COMMAND -h` describes a command's flags.")
}

// newFlagSet makes a FlagSet whose -h output names the command; parse errors
// are reported by the caller through parseFlags.
func newFlagSet(c *Command) *flag.FlagSet {
	fs := flag.NewFlagSet("hidiffd "+c.Name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: hidiffd %s %s\n\n%s\n", c.Name, c.Args, c.Summary)
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(os.Stderr)
		if b.Len() > 0 {
			fmt.Fprintf(os.Stderr, "\nflags:\n%s", b.String())
		}
	}
	return fs
}

// parseFlags parses args and maps the outcome to an exit status: -1 means
// go on, 0 means help was printed, 2 a usage error. Flags may follow
// positional arguments (`hidiffd deblur a.jpg --out x`): the standard flag
// package stops at the first positional, so parsing resumes after each one.
func parseFlags(fs *flag.FlagSet, args []string) (positional []string, status int) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, -1
		}
		// Parse stops after a "--" too; everything after it is positional.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), -1
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}
