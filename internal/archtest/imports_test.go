package archtest

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The tables below are the import rules of docs/ARCHITECTURE.md ("Import
// rules"). Change both together.

// module is the module path of go.mod.
const module = "hidiffd"

// Layers, lowest first. A package may import module packages of a lower
// layer only (tests: see testMayImport). The gaps leave room for a layer
// in between.
const (
	pins      = 0  // the module root: tools.go pins go.mod's modules (build tag tools)
	base      = 5  // one mechanism several layers share (internal/durable, internal/clock); no other hidiffd package
	library   = 10 // one job each, no other hidiffd package but base
	contract  = 15 // what a model folder is: model, over deblur's types
	backend   = 20 // runs the network: ort, trt
	selection = 25 // backend/: picks and opens a backend, for the daemon and the one-shot commands
	wiring    = 30 // daemon: wires libraries and backends together
	binary    = 40 // cmd/hidiffd, and the acceptance test of the binary
)

var layerName = map[int]string{pins: "pins", base: "base", library: "library", contract: "contract", backend: "backend",
	selection: "selection", wiring: "wiring", binary: "binary"}

// layers places every package of the module, by its folder relative to the
// module root ("" is the root). A new package must be added here and to
// the table in docs/ARCHITECTURE.md.
var layers = map[string]int{
	"": pins,

	"internal/clock":           base,
	"internal/clock/clocktest": base,
	"internal/durable":         base,

	"config":               library,
	"deblur":               library,
	"gpu":                  library,
	"imageio":              library,
	"imageio/metatest":     library,
	"logging":              library,
	"quality":              library,
	"spool":                library,
	"watch":                library,
	"trt/internal/fakeabi": library,
	"internal/archtest":    library,
	"internal/tinyonnx":    library,

	"model": contract,

	"ort": backend,
	"trt": backend,

	"backend": selection,

	"daemon": wiring,

	"cmd/hidiffd":                binary,
	"test/crash":                 binary,
	"test/memory":                binary,
	"scripts/benchmarks/memcost": binary,
}

// testOnly are helpers for tests: no non-test file may import them.
var testOnly = map[string]bool{
	"internal/clock/clocktest": true,
	"imageio/metatest":         true,
	"trt/internal/fakeabi":     true,
}

// debts are imports the layers forbid that exist today, each with its
// issue. The test fails when one is no longer there, so that the table
// and docs/ARCHITECTURE.md are brought up to date. There are none today
// (issue 16 paid trt -> ort by moving the model contract to model).
var debts = map[[2]string]string{}

// owned are third-party modules that only the listed packages may import
// directly (prefix match on the import path). The root's tools.go pins
// them all for go.mod and compiles into nothing.
var owned = map[string][]string{
	"github.com/yalue/onnxruntime_go": {"ort"},    // ONNX Runtime: the ort backend only
	"github.com/NVIDIA/go-nvml":       {"gpu"},    // NVML, loaded at run time: GPU telemetry only
	"github.com/fsnotify/fsnotify":    {"watch"},  // intake
	"github.com/pelletier/go-toml/v2": {"config"}, // the configuration file
}

// goFile is one parsed .go file.
type goFile struct {
	path    string // relative to the module root, slash-separated
	test    bool
	pkgName string
	doc     string
	imports []goImport
}

type goImport struct {
	path string
	line int
}

// goPackage is one folder of the module with .go files.
type goPackage struct {
	rel   string // folder relative to the module root ("" for the root)
	files []goFile
}

// moduleRoot finds the folder of hidiffd's go.mod above the test's folder.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(string(b)) == module {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of module %s above the test's folder", module)
		}
		dir = parent
	}
}

func modulePath(gomod string) string {
	for _, line := range strings.Split(gomod, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// loadPackages parses every .go file of the module, whatever its build
// tags, skipping what the go command skips (testdata, names starting with
// "." or "_"), other modules (a folder with its own go.mod: tools/), and
// the ignored output folders build/ and third_party/.
func loadPackages(t *testing.T) (root string, pkgs map[string]*goPackage) {
	t.Helper()
	root = moduleRoot(t)
	pkgs = map[string]*goPackage{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			rel = ""
		}
		name := d.Name()
		if d.IsDir() {
			if rel == "" {
				return nil
			}
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" ||
				rel == "build" || rel == "third_party" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		gf := goFile{path: rel, test: strings.HasSuffix(name, "_test.go"), pkgName: f.Name.Name}
		if f.Doc != nil {
			gf.doc = f.Doc.Text()
		}
		for _, is := range f.Imports {
			p, err := strconv.Unquote(is.Path.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			gf.imports = append(gf.imports, goImport{p, fset.Position(is.Pos()).Line})
		}
		dir := pathDir(rel)
		if pkgs[dir] == nil {
			pkgs[dir] = &goPackage{rel: dir}
		}
		pkgs[dir].files = append(pkgs[dir].files, gf)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages under %s: the walk is broken", len(pkgs), root)
	}
	return root, pkgs
}

func pathDir(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestPackageComments: every package says what it is for, in a comment on
// the package clause of a non-test file ("Package NAME ..." or, for a
// command, "Command NAME ..."). A folder of tests only (test/crash) carries
// it in a test file.
func TestPackageComments(t *testing.T) {
	_, pkgs := loadPackages(t)
	for _, dir := range sortedKeys(pkgs) {
		p := pkgs[dir]
		var prod, all []goFile
		for _, f := range p.files {
			all = append(all, f)
			if !f.test {
				prod = append(prod, f)
			}
		}
		candidates := prod
		if len(prod) == 0 {
			candidates = all
		}
		var wanted string
		ok := false
		for _, f := range candidates {
			name := strings.TrimSuffix(f.pkgName, "_test")
			wanted = "Package " + name + " "
			if name == "main" {
				wanted = "Command " + filepath.Base(dir) + " "
			}
			if strings.HasPrefix(f.doc, wanted) {
				ok = true
				break
			}
		}
		if !ok {
			what := dir
			if what == "" {
				what = "the module root"
			}
			t.Errorf("%s: no package comment: one non-test file needs a comment starting %q right above its package clause", what, wanted)
		}
	}
}

// TestImportRules enforces docs/ARCHITECTURE.md's import rules on every
// import of every .go file, test files included.
func TestImportRules(t *testing.T) {
	_, pkgs := loadPackages(t)
	usedDebts := map[[2]string]bool{}
	for _, dir := range sortedKeys(pkgs) {
		from, known := layers[dir]
		if !known {
			t.Errorf("package %s is not placed in a layer: add it to the layers table of internal/archtest/imports_test.go "+
				"and to docs/ARCHITECTURE.md (Import rules)", importPath(dir))
			continue
		}
		for _, f := range pkgs[dir].files {
			for _, imp := range f.imports {
				if err := checkImport(dir, from, f, imp.path, usedDebts); err != nil {
					t.Errorf("%s:%d: imports %q: %v (see docs/ARCHITECTURE.md, Import rules)", f.path, imp.line, imp.path, err)
				}
			}
		}
	}
	for d, why := range debts {
		if !usedDebts[d] {
			t.Errorf("debt %s -> %s (%s) is paid: remove it from the debts table and from docs/ARCHITECTURE.md", d[0], d[1], why)
		}
	}
}

func importPath(dir string) string {
	if dir == "" {
		return module
	}
	return module + "/" + dir
}

// checkImport says why package dir (in layer from) may not import path in
// file f, or nil.
func checkImport(dir string, from int, f goFile, path string, usedDebts map[[2]string]bool) error {
	for mod, owners := range owned {
		if path != mod && !strings.HasPrefix(path, mod+"/") {
			continue
		}
		if dir == "" { // tools.go: pins only
			return nil
		}
		for _, o := range owners {
			if o == dir {
				return nil
			}
		}
		return fmt.Errorf("%s is owned by %s; no other package imports it directly", mod, strings.Join(owners, ", "))
	}
	if path != module && !strings.HasPrefix(path, module+"/") {
		return nil // the standard library, "C", other third-party modules
	}
	to := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
	if to == dir {
		return nil // an external test package importing its own package
	}
	if strings.HasPrefix(to, "cmd/") || to == "cmd" {
		return errors.New("nothing imports a command")
	}
	target, known := layers[to]
	if !known {
		return fmt.Errorf("%s is not placed in a layer (no such package, or a new one to add to the tables)", path)
	}
	if testOnly[to] && !f.test {
		return fmt.Errorf("%s is a test helper: only _test.go files import it", path)
	}
	if dir == "" {
		return errors.New("the module root only pins third-party modules")
	}
	if target < from {
		return nil
	}
	if _, ok := debts[[2]string{dir, to}]; ok {
		usedDebts[[2]string{dir, to}] = true
		return nil
	}
	// Tests may also use any library (libraries import no other hidiffd
	// package but base, which imports none, so this cannot close a
	// cycle), never a layer above.
	if f.test && target == library {
		return nil
	}
	return fmt.Errorf("%s (layer %s) may import only lower layers; %s is layer %s",
		importPath(dir), layerName[from], path, layerName[target])
}
