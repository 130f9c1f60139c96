//go:build tensorrt

package trt

// With the tag `tensorrt` the real shim is compiled into this package
// (shim_tensorrt.cc includes shim/*.cc). TensorRT's headers are found on the
// compiler's include path: JetPack and NVIDIA's Debian/Ubuntu packages put
// them in /usr/include/<triplet>, which is searched by default; a tarball
// needs CGO_CXXFLAGS=-I<tarball>/include. CUDA headers are not needed: see
// shim/cudastub/cuda_runtime_api.h. -ldl: glibc before 2.34 (JetPack 5's
// Ubuntu 20.04) keeps dlopen in libdl.

/*
#cgo CXXFLAGS: -std=c++17 -Wall -Wextra -isystem ${SRCDIR}/shim/cudastub
#cgo LDFLAGS: -ldl
#include "hidiff_trt.h"
*/
import "C"

import "unsafe"

func shimAPI() unsafe.Pointer { return unsafe.Pointer(C.hidiff_trt_shim_api()) }
