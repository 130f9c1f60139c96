package model

import (
	"testing"

	"hidiffd/internal/tinyonnx"
)

// The tiny contract-shaped graphs of the tests (hidiffd/internal/tinyonnx):
//
//	prior.onnx:       prior = 0.5*noise + mean(blur)
//	transformer.onnx: sharp = blur + mean(prior)

type (
	tinyGraph = tinyonnx.Graph
	tinyIO    = tinyonnx.IO
)

const (
	onnxFloat  = tinyonnx.Float
	onnxDouble = tinyonnx.Double
)

// writeTinyModel writes a model folder and returns its path; edit, when not
// nil, changes the graphs before they are written.
func writeTinyModel(t testing.TB, edit func(prior, transformer *tinyGraph)) string {
	t.Helper()
	dir := t.TempDir()
	if err := tinyonnx.WriteModel(dir, edit); err != nil {
		t.Fatal(err)
	}
	return dir
}
