package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"testing"
)

// durableOwner is the one package that fsyncs and renames without
// replacing (docs/ARCHITECTURE.md, internal/durable). Four drifted copies
// of "write a file durably", one of them ignoring errors, are why.
const durableOwner = "internal/durable"

// TestOneDurableWriter: no production file outside internal/durable calls
// a Sync() method (File.Sync: an fsync of a file or a folder) or
// unix.Renameat2 itself; a new writer uses durable.Write, durable.SyncDir
// or durable.NoReplace, so that every copy keeps the same order of steps
// and returns every error.
func TestOneDurableWriter(t *testing.T) {
	root, pkgs := loadPackages(t)
	fset := token.NewFileSet()
	for _, dir := range sortedKeys(pkgs) {
		if dir == durableOwner {
			continue
		}
		for _, f := range pkgs[dir].files {
			if f.test {
				continue
			}
			file, err := parser.ParseFile(fset, filepath.Join(root, filepath.FromSlash(f.path)), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if (sel.Sel.Name == "Sync" && len(call.Args) == 0) || sel.Sel.Name == "Renameat2" {
					t.Errorf("%s:%d: calls %s itself: write files through %s (Write, WriteFile, SyncDir, NoReplace), "+
						"the one durable writer (see docs/ARCHITECTURE.md)", f.path, fset.Position(call.Pos()).Line, sel.Sel.Name, durableOwner)
				}
				return true
			})
		}
	}
}
