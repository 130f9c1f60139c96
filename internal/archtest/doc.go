// Package archtest guards the repository's architecture, as
// docs/ARCHITECTURE.md states it. It has no code of its own; its tests
// check, from the source files (every build tag included) and the go
// command:
//
//   - every Go package has a package comment;
//   - the import rules between the module's packages (layers, the
//     test-only helpers, the third-party modules each owned by one
//     package, the known debts);
//   - modules some packages must not reach even indirectly (trt and model
//     never depend on onnxruntime_go), from `go list -deps` under each
//     build tag set;
//   - only internal/durable fsyncs or renames without replacing (one
//     durable writer);
//   - no tracked file names an absolute path of the machine it was written
//     on, and every reference to a design document resolves to a file in
//     the repository.
//
// A failure names the file and the rule; the fix is in the code, or, when
// the architecture changes on purpose, in docs/ARCHITECTURE.md and the
// tables of imports_test.go together.
package archtest
