package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeblurNeverOverwritesInput runs `hidiffd deblur` with every path shape
// that once made --out name an input's own folder (issue 12, D1): a symlink
// to the folder, the folder reached through a symlink, an absolute path
// against a relative one, a folder given as input, an input that is a
// symlink into --out, and a later input that an earlier result would
// replace. Each must leave every input byte for byte as it was, refuse the
// file with a message that names it, and exit 1.
func TestDeblurNeverOverwritesInput(t *testing.T) {
	modelDir, ortLib := testModel(t)
	img := testJPEG(t, 40, 32)

	type shape struct {
		name string
		// setup builds the tree in dir (the working folder) and returns the
		// command's arguments after "deblur"; inputs are the files that must
		// stay unchanged.
		setup    func(t *testing.T, dir string) (args, inputs []string)
		refused  string // a file name the refusal must mention
		wantCode int
	}
	mk := func(t *testing.T, dir string, rel ...string) {
		t.Helper()
		for _, r := range rel {
			p := filepath.Join(dir, r)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	link := func(t *testing.T, target, name string) {
		t.Helper()
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	shapes := []shape{
		{name: "out is a symlink to the input's folder", refused: "x.jpg", wantCode: 1,
			setup: func(t *testing.T, dir string) ([]string, []string) {
				mk(t, dir, "d/x.jpg")
				link(t, "d", filepath.Join(dir, "L"))
				return []string{"--out", "L", "d/x.jpg"}, []string{"d/x.jpg"}
			}},
		{name: "input reached through a symlink, out absolute", refused: "x.jpg", wantCode: 1,
			setup: func(t *testing.T, dir string) ([]string, []string) {
				mk(t, dir, "d/x.jpg")
				link(t, "d", filepath.Join(dir, "L"))
				return []string{"--out", filepath.Join(dir, "d"), "L/x.jpg"}, []string{"d/x.jpg"}
			}},
		{name: "out with a trailing dot and ..", refused: "x.jpg", wantCode: 1,
			setup: func(t *testing.T, dir string) ([]string, []string) {
				mk(t, dir, "d/x.jpg", "e/keep")
				return []string{"--out", "e/../d/.", "d/x.jpg"}, []string{"d/x.jpg"}
			}},
		{name: "folder input, out a symlink to it", refused: "x.jpg", wantCode: 1,
			setup: func(t *testing.T, dir string) ([]string, []string) {
				mk(t, dir, "d/x.jpg", "d/y.jpg")
				link(t, "d", filepath.Join(dir, "L"))
				return []string{"--out", "L", "d"}, []string{"d/x.jpg", "d/y.jpg"}
			}},
		{name: "input is a symlink to a file in out", refused: "x.jpg", wantCode: 1,
			setup: func(t *testing.T, dir string) ([]string, []string) {
				mk(t, dir, "d/x.jpg")
				os.Mkdir(filepath.Join(dir, "e"), 0o755)
				link(t, "../d/x.jpg", filepath.Join(dir, "e", "x.jpg"))
				return []string{"--out", "d", "e/x.jpg"}, []string{"d/x.jpg"}
			}},
		{name: "an earlier result would replace a later input", refused: "x.jpg", wantCode: 1,
			setup: func(t *testing.T, dir string) ([]string, []string) {
				mk(t, dir, "a/x.jpg", "o/x.jpg")
				return []string{"--out", "o", "a/x.jpg", "o/x.jpg"}, []string{"a/x.jpg", "o/x.jpg"}
			}},
	}
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			dir := t.TempDir()
			args, inputs := s.setup(t, dir)
			cmd := exec.Command(hidiffdBin(t), append([]string{"deblur", "--model", modelDir, "--tile", "64", "--threads", "1"}, args...)...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			code := exitCode(cmd.Run())
			for _, in := range inputs {
				got, err := os.ReadFile(filepath.Join(dir, in))
				if err != nil || !bytes.Equal(got, img) {
					t.Errorf("input %s was replaced or lost (%v)", in, err)
				}
			}
			if code != s.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, s.wantCode, stdout.String(), stderr.String())
			}
			all := stdout.String() + stderr.String()
			if !strings.Contains(all, s.refused) || !strings.Contains(all, "input") {
				t.Errorf("no refusal naming %s:\n%s", s.refused, all)
			}
		})
	}
}

// TestDeblurMissingFileIsOneFailure: one name that does not exist is one
// failed item; the other files of the batch are still deblurred.
func TestDeblurMissingFileIsOneFailure(t *testing.T) {
	modelDir, ortLib := testModel(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jpg")
	os.WriteFile(good, testJPEG(t, 40, 32), 0o644)
	out := filepath.Join(dir, "out")
	cmd := exec.Command(hidiffdBin(t), "deblur", "--model", modelDir, "--tile", "64", "--threads", "1",
		"--out", out, filepath.Join(dir, "missing.jpg"), good)
	cmd.Env = append(os.Environ(), "HIDIFFD_ORT_LIB="+ortLib)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if code := exitCode(cmd.Run()); code != 1 {
		t.Errorf("exit %d, want 1 (one missing file)\n%s%s", code, stdout.String(), stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "good.jpg")); err != nil {
		t.Errorf("the good file was not deblurred: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String()+stderr.String(), "missing.jpg") {
		t.Errorf("the missing file is not named:\n%s%s", stdout.String(), stderr.String())
	}
}
