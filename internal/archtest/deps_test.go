package archtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// notReached are third-party modules a package must not depend on at all:
// not directly (the owned table already says that) and not through any
// chain of imports, under every set of build tags in buildTags. The
// TensorRT backend and the model contract have no use for ONNX Runtime;
// depending on it would tie a GPU build to the CPU runtime again
// (docs/ARCHITECTURE.md, Import rules).
var notReached = map[string][]string{
	"model": {"github.com/yalue/onnxruntime_go"},
	"trt":   {"github.com/yalue/onnxruntime_go"},
}

// buildTags are the tag sets the binary is built with: the default, and
// the TensorRT build (Makefile, hidiffd-tensorrt).
var buildTags = []string{"", "tensorrt"}

// depGraph is `go list -deps` of pkgs under tags: every package they
// depend on, mapped to the packages it imports (tests excluded: they do
// not ship).
func depGraph(t *testing.T, root, tags string, pkgs []string) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on $PATH (go test puts its own first)")
	}
	args := append([]string{"list", "-deps", "-tags=" + tags, "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	// With cgo off, go list would drop the cgo files (trt's TensorRT
	// bindings among them) and miss what they import.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	g := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			g[f[0]] = f[1:]
		}
	}
	return g
}

// chainTo is the shortest import chain from pkg to a package of module
// mod ("a -> b -> mod/x"), or "" if there is none.
func chainTo(g map[string][]string, pkg, mod string) string {
	prev := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == mod || strings.HasPrefix(p, mod+"/") {
			chain := []string{p}
			for q := prev[p]; q != ""; q = prev[q] {
				chain = append([]string{q}, chain...)
			}
			return strings.Join(chain, " -> ")
		}
		for _, imp := range g[p] {
			if _, seen := prev[imp]; !seen {
				prev[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return ""
}

// TestNotReached enforces notReached with the go command's own view of the
// dependencies, once per build tag set. ort, which owns onnxruntime_go, is
// listed too as a control: if the check cannot see ort reach it, it
// cannot see anyone else do so either.
func TestNotReached(t *testing.T) {
	root := moduleRoot(t)
	const control, controlMod = "ort", "github.com/yalue/onnxruntime_go"
	pkgs := []string{importPath(control)}
	for _, dir := range sortedKeys(notReached) {
		pkgs = append(pkgs, importPath(dir))
	}
	for _, tags := range buildTags {
		name := "tags=" + tags
		if tags == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			g := depGraph(t, root, tags, pkgs)
			if chainTo(g, importPath(control), controlMod) == "" {
				t.Fatalf("go list shows no path from %s to %s: the check is blind", importPath(control), controlMod)
			}
			for _, dir := range sortedKeys(notReached) {
				for _, mod := range notReached[dir] {
					if chain := chainTo(g, importPath(dir), mod); chain != "" {
						t.Errorf("%s depends on %s: %s (see docs/ARCHITECTURE.md, Import rules)", importPath(dir), mod, chain)
					}
				}
			}
		})
	}
}
