/*
 * cudastub/cuda_runtime_api.h: a stand-in for the CUDA toolkit header of
 * that name, for compiling the TensorRT shim where no CUDA toolkit is
 * installed (CI, the build host; Debian 12's nvidia-cuda-dev is in
 * non-free, which those machines do not enable).
 *
 * Why this is safe: TensorRT's public headers (8.5 to 10.x) include
 * <cuda_runtime_api.h> but use only two of its types in declarations,
 * cudaStream_t and cudaEvent_t; every other cuda* name in them is in a
 * comment. Both are opaque pointers to incomplete structs, declared here
 * exactly as CUDA's driver_types.h declares them, so a shim compiled
 * against this file has the same types, the same C++ name mangling and the
 * same ABI as one compiled against the real header. The shim itself calls
 * no CUDA runtime function (it uses the driver API through dlopen).
 *
 * The cgo flags add this folder with -isystem, after any -I from
 * CGO_CXXFLAGS: where the real header is on the include path
 * (-I/usr/local/cuda/include), it wins and this file is not read.
 */
#ifndef HIDIFF_CUDA_RUNTIME_API_STUB_H
#define HIDIFF_CUDA_RUNTIME_API_STUB_H

#define HIDIFF_CUDA_RUNTIME_API_STUB 1

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;

#endif
