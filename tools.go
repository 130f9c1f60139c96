//go:build tools

// Package tools pins the modules the packages below are built on, so that
// go.mod and go.sum stay complete while packages are added one at a time.
package tools

import (
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/rs/zerolog"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/yalue/onnxruntime_go"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
