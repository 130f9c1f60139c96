package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at link time:
//
//	go build -ldflags "-X main.version=1.2.0" ./cmd/hidiffd
//
// Without it, the module version or VCS revision from the build info is
// shown, so a binary from `go build` still says what it was built from.
var version = ""

// Version is the string reported by `hidiffd version`, in logs and in the
// hidiffd_build_info metric.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return "devel-" + rev + dirty
		}
	}
	return "devel"
}

func init() {
	register(&Command{
		Name:    "version",
		Summary: "print the version and the Go toolchain it was built with",
		Run: func(ctx context.Context, args []string) int {
			fs := newFlagSet(commands["version"])
			if _, st := parseFlags(fs, args); st >= 0 {
				return st
			}
			fmt.Printf("hidiffd %s\n%s %s/%s\n", Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return 0
		},
	})
}
