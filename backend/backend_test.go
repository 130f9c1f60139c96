package backend

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hidiffd/config"
	"hidiffd/trt"
)

// testModelDir is the random-weight s export (make models), or skips.
func testModelDir(t *testing.T) string {
	t.Helper()
	models := filepath.Join("..", "build", "models")
	if env := os.Getenv("HIDIFFD_TEST_MODELS"); env != "" {
		models = env
	}
	dir := filepath.Join(models, "s")
	if _, err := os.Stat(filepath.Join(dir, "transformer.onnx")); err != nil {
		t.Skipf("test model missing (%v): run `make models` (or set HIDIFFD_TEST_MODELS)", err)
	}
	return dir
}

// TestOpenRefusals: what Open refuses names the key (and, from a file, its
// line), before anything is loaded.
func TestOpenRefusals(t *testing.T) {
	cases := []struct {
		name    string
		toml    string
		want    []string
		cause   error // errors.Is must find it through the *config.Error
		skipTRT bool
	}{
		{"model.dir missing", "[model]\ndir = \"/nonexistent/hidiffd-model\"\n[backend]\nkind = \"onnxruntime\"\n",
			[]string{"c.toml:2: model.dir", "no such file"}, fs.ErrNotExist, false},
		{"tensorrt not built", "[backend]\nkind = \"tensorrt\"\n",
			[]string{"c.toml:2: backend.kind", "rebuild with -tags tensorrt"}, trt.ErrNotBuilt, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.skipTRT && trt.Available() == nil {
				t.Skip("built with TensorRT")
			}
			cfg, err := config.Parse([]byte(c.toml), "/etc/hidiffd/c.toml")
			if err != nil {
				t.Fatal(err)
			}
			b, err := Open(context.Background(), cfg, Options{})
			if err == nil {
				b.Close()
				t.Fatal("opened")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to contain %q", err, w)
				}
			}
			var ce *config.Error
			if !errors.As(err, &ce) || !errors.Is(err, c.cause) {
				t.Errorf("err = %v; want a *config.Error wrapping %v", err, c.cause)
			}
		})
	}
}

// TestOpenSelects: onnxruntime opens ONNX Runtime; auto does too on a
// machine (or binary) without TensorRT.
func TestOpenSelects(t *testing.T) {
	dir := testModelDir(t)
	for _, kind := range []string{KindONNXRuntime, KindAuto} {
		t.Run(kind, func(t *testing.T) {
			if kind == KindAuto && trt.Available() == nil {
				t.Skip("built with TensorRT: auto depends on the machine's GPU")
			}
			cfg := config.Default()
			cfg.Model.Dir, cfg.Backend.Kind, cfg.Backend.Threads = dir, kind, 1
			b, err := Open(context.Background(), cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Name() != KindONNXRuntime || b.Info().Preset != "s" {
				t.Errorf("opened %s for preset %q", b.Name(), b.Info().Preset)
			}
		})
	}
}
