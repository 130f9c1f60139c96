package main

import (
	"hidiffd/model"

	"os"
	"path/filepath"
)

// shippedModel is the default model's folder relative to a search root.
const shippedModel = "models/default"

// modelCandidates are the places `deblur` and `doctor` look for the shipped
// model when --model is not given, in order: next to the executable and one
// folder up (a checkout's ./hidiffd or bin/hidiffd), the installed share
// folder beside it (/usr/bin -> /usr/share/hidiffd), the working folder, and
// the packaged default path.
func modelCandidates() []string {
	var out []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		out = append(out,
			filepath.Join(dir, shippedModel),
			filepath.Join(dir, "..", shippedModel),
			filepath.Join(dir, "..", "share", "hidiffd", shippedModel),
		)
	}
	if wd, err := os.Getwd(); err == nil {
		out = append(out, filepath.Join(wd, shippedModel))
	}
	out = append(out, "/usr/share/hidiffd/"+shippedModel)
	return out
}

// findModel returns the first candidate that holds a prior.onnx, and every
// place it looked (for the error message).
func findModel() (dir string, tried []string) {
	for _, c := range modelCandidates() {
		c = filepath.Clean(c)
		tried = append(tried, c)
		if st, err := os.Stat(filepath.Join(c, model.PriorFile)); err == nil && st.Mode().IsRegular() {
			return c, tried
		}
	}
	return "", tried
}
