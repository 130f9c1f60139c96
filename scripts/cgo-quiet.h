/* Force-included into every cgo C file by the Makefile (CGO_CFLAGS with
 * -include). go-nvml, and nothing else we build, defines
 * NVML_NO_UNVERSIONED_FUNC_DEFS in its #cgo CFLAGS; only there, this turns
 * off -Wdeprecated-declarations, which fires once for each NVML function that
 * nvml.h marks DEPRECATED(13.0) and go-nvml still wraps (29 warnings, about
 * 150 lines, on every uncached build). GCC reads -D options before -include
 * files, so the test sees go-nvml's definition. Our own C (trt/) and C++
 * (the TensorRT shim, CGO_CXXFLAGS) keep every warning. */
#if defined(NVML_NO_UNVERSIONED_FUNC_DEFS)
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
