package ort

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	onnx "github.com/yalue/onnxruntime_go"
)

// LibraryEnv names the environment variable that points at
// libonnxruntime.so.1; it wins over every other place.
const LibraryEnv = "HIDIFFD_ORT_LIB"

// libraryName is the soname the setup script installs (from onnxruntime-node).
const libraryName = "libonnxruntime.so.1"

// systemLibraryPath is where packages install the library next to the binary.
const systemLibraryPath = "/usr/lib/hidiffd/" + libraryName

// DefaultLibraryPath finds libonnxruntime.so.1, in this order:
//
//  1. $HIDIFFD_ORT_LIB, taken as is: an operator who names a file means that
//     file, so a wrong value is an error rather than a silent fallback;
//  2. third_party/onnxruntime/linux-<x64|arm64>/libonnxruntime.so.1 in the
//     executable's directory or any directory above it, then likewise from
//     the current directory (so both a built ./hidiffd in the repository and
//     `go test` in a package folder find scripts/setup-ort.sh's copy);
//  3. /usr/lib/hidiffd/libonnxruntime.so.1.
//
// The error lists every path tried.
func DefaultLibraryPath() (string, error) {
	if p := os.Getenv(LibraryEnv); p != "" {
		if err := checkLibraryFile(p); err != nil {
			return "", fmt.Errorf("ort: $%s: %w", LibraryEnv, err)
		}
		return p, nil
	}
	var tried []string
	if rel := thirdPartyRel(); rel != "" {
		var starts []string
		if exe, err := os.Executable(); err == nil {
			if real, err := filepath.EvalSymlinks(exe); err == nil {
				exe = real
			}
			starts = append(starts, filepath.Dir(exe))
		}
		if wd, err := os.Getwd(); err == nil {
			starts = append(starts, wd)
		}
		seen := map[string]bool{}
		for _, start := range starts {
			for dir := start; ; {
				p := filepath.Join(dir, rel)
				if !seen[p] {
					seen[p] = true
					tried = append(tried, p)
					if isFile(p) {
						return p, nil
					}
				}
				parent := filepath.Dir(dir)
				if parent == dir {
					break
				}
				dir = parent
			}
		}
	}
	tried = append(tried, systemLibraryPath)
	if isFile(systemLibraryPath) {
		return systemLibraryPath, nil
	}
	return "", fmt.Errorf("ort: %s not found (run scripts/setup-ort.sh, or set $%s); tried: %s",
		libraryName, LibraryEnv, strings.Join(tried, ", "))
}

// thirdPartyRel is the repository-relative library path for this machine's
// architecture, or "" where onnxruntime-node ships no build.
func thirdPartyRel() string {
	var arch string
	switch runtime.GOARCH {
	case "amd64":
		arch = "x64"
	case "arm64":
		arch = "arm64"
	default:
		return ""
	}
	return filepath.Join("third_party", "onnxruntime", "linux-"+arch, libraryName)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// checkLibraryFile turns the cases dlopen reports cryptically (or, for a
// bare name, resolves through the loader path) into an error naming the file.
func checkLibraryFile(p string) error {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("ONNX Runtime library %s: no such file", p)
	case err != nil:
		return fmt.Errorf("ONNX Runtime library %s: %w", p, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("ONNX Runtime library %s: not a regular file", p)
	}
	return nil
}

// The ONNX Runtime environment is process-global in onnxruntime_go (one
// OrtEnv, one dlopen'ed library, one shared-library path), so every Backend
// shares it. env guards it.
//
// It is initialised by the first Open that gets that far and is never
// destroyed. Why never, rather than when the last Backend closes:
//   - it costs little: the OrtEnv is a logger and some bookkeeping; the memory
//     that matters (weights, the CPU arena) belongs to the sessions, which
//     Close frees;
//   - DestroyEnvironment dlcloses a C++ runtime; unloading code that may still
//     own static objects or pool threads is a crash risk for no benefit, and
//     it would race a concurrent Open that has just found the environment up;
//   - the daemon reloads models (config change, engine rebuild); keeping the
//     library loaded makes a reload a session load and nothing more.
//
// A failed initialisation is not cached: it leaves nothing in use behind (a
// failed dlopen holds no handle; a failure after it leaves at most one extra
// reference to the mapped library), so the next Open tries again and reports
// its own error. Each caller therefore
// sees an error for as long as the library cannot be loaded, and a test
// that feeds a bad path does not poison the process for the tests after it.
var env struct {
	mu      sync.Mutex
	lib     string // library the environment was initialised from; "" = not yet
	version string // ONNX Runtime's own version string
}

// TelemetryEnv is ONNX Runtime's switch for its telemetry client: "1" turns
// it off. hidiffd sets it to "1" unless it is already set.
const TelemetryEnv = "ORT_DISABLE_TELEMETRY"

// ensureEnv makes sure the environment is up and was loaded from lib (a
// process can only hold one ONNX Runtime). It returns the library actually in
// use and the runtime's version.
func ensureEnv(lib string) (string, string, error) {
	// A missing file is the likelier mistake, and the clearer message.
	if err := checkLibraryFile(lib); err != nil {
		return "", "", fmt.Errorf("ort: %w", err)
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.lib != "" {
		if !sameFile(env.lib, lib) {
			return "", "", fmt.Errorf("ort: ONNX Runtime is already loaded from %s in this process; cannot also load %s",
				env.lib, lib)
		}
		return env.lib, env.version, nil
	}
	if onnx.IsInitialized() {
		// Someone outside this package set it up; use theirs rather than fail,
		// there is no way to ask which file it came from.
		env.lib = lib
		env.version = onnx.GetVersion()
		return env.lib, env.version, nil
	}
	// ONNX Runtime's Linux build (1.30 from npm) starts its telemetry client
	// with the environment: it writes a device id and an event database under
	// $HOME/.cache/Microsoft/DeveloperTools/.onnxruntime (for the service,
	// /var/lib/hidiffd), which DisableTelemetry afterwards does not undo. Opt
	// out before loading it, unless the variable is set already.
	if _, set := os.LookupEnv(TelemetryEnv); !set {
		os.Setenv(TelemetryEnv, "1")
	}
	onnx.SetSharedLibraryPath(lib)
	if err := onnx.InitializeEnvironment(); err != nil {
		hint := ""
		if strings.Contains(err.Error(), "API base") {
			// onnxruntime_go v1.27 asks for C API version 24; an older
			// library answers with nothing but this.
			hint = " (onnxruntime_go needs ONNX Runtime >= 1.24)"
		}
		return "", "", fmt.Errorf("ort: loading ONNX Runtime from %s: %w%s", lib, err, hint)
	}
	env.lib = lib
	env.version = onnx.GetVersion()
	return env.lib, env.version, nil
}

// sameFile compares two library paths by identity, so that "./x" and a
// symlink to the same file count as the same library.
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}
