//go:build !tensorrt

package trt

import "unsafe"

// Without the tag `tensorrt` no shim is compiled in: Open and OpenRuntime
// return ErrNotBuilt, and the binary needs neither TensorRT's headers to
// build nor its libraries to run.
func shimAPI() unsafe.Pointer { return nil }
