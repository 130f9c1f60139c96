// cuda_driver.h: the CUDA driver API as the shim uses it, reached through
// dlopen("libcuda.so.1") and dlsym, plus the device and buffer handling
// built on it. Shared by the TensorRT shim and by the GPU check
// (gpucheck/cuda_check.cc), so the check exercises this very code.
//
// Why our own declarations instead of <cuda.h>: the shim must compile on
// machines with no CUDA toolkit (CI, the build host), and the binary must
// start where no driver is installed, so nothing may be linked against
// libcuda. The few types and constants below are the driver's stable ABI:
// CUresult and the attribute numbers have not changed since CUDA 4, and the
// 64-bit entry points carry the _v2 suffix since CUDA 3.2 (cuda.h maps
// cuMemAlloc to cuMemAlloc_v2 with a #define; dlsym needs the real name).
#ifndef HIDIFF_CUDA_DRIVER_H
#define HIDIFF_CUDA_DRIVER_H

#include <cstddef>
#include <cstdint>
#include <string>

// Global-namespace tags, as in cuda.h and driver_types.h, so that CUstream
// and TensorRT's cudaStream_t are the same type (struct CUstream_st *).
struct CUctx_st;
struct CUstream_st;

namespace hidiff {
namespace cu {

typedef int CUresult;
typedef int CUdevice;
typedef CUctx_st *CUcontext;
typedef CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr; // CUdeviceptr_v2

enum : CUresult {
    SUCCESS = 0,
    ERROR_INVALID_VALUE = 1,
    ERROR_OUT_OF_MEMORY = 2,
    ERROR_NOT_INITIALIZED = 3,
    ERROR_NO_DEVICE = 100,
    ERROR_INVALID_DEVICE = 101,
};

enum : int {
    ATTR_INTEGRATED = 18,
    ATTR_CAN_MAP_HOST_MEMORY = 19,
    ATTR_CC_MAJOR = 75,
    ATTR_CC_MINOR = 76,
};

enum : unsigned {
    MEMHOSTALLOC_PORTABLE = 0x01,
    MEMHOSTALLOC_DEVICEMAP = 0x02,
    STREAM_NON_BLOCKING = 0x01,
};

// TensorRT requires every I/O tensor address to be 256-byte aligned
// (IExecutionContext::setTensorAddress). cuMemAlloc returns 256-aligned
// memory (the CUDA programming guide guarantees "at least 256 bytes"), and
// cuMemHostAlloc returns page-aligned memory; Buffers checks it anyway.
constexpr std::size_t kAlign = 256;

// Driver is the loaded library and the entry points the shim calls.
struct Driver {
    void *handle = nullptr;
    std::string path; // the candidate that loaded

    CUresult (*Init)(unsigned) = nullptr;
    CUresult (*DriverGetVersion)(int *) = nullptr;
    CUresult (*DeviceGetCount)(int *) = nullptr;
    CUresult (*DeviceGet)(CUdevice *, int) = nullptr;
    CUresult (*DeviceGetName)(char *, int, CUdevice) = nullptr;
    CUresult (*DeviceGetAttribute)(int *, int, CUdevice) = nullptr;
    CUresult (*DeviceTotalMem)(std::size_t *, CUdevice) = nullptr;
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice) = nullptr;
    CUresult (*DevicePrimaryCtxRelease)(CUdevice) = nullptr;
    CUresult (*CtxSetCurrent)(CUcontext) = nullptr;
    CUresult (*CtxGetCurrent)(CUcontext *) = nullptr;
    CUresult (*MemAlloc)(CUdeviceptr *, std::size_t) = nullptr;
    CUresult (*MemFree)(CUdeviceptr) = nullptr;
    CUresult (*MemHostAlloc)(void **, std::size_t, unsigned) = nullptr;
    CUresult (*MemFreeHost)(void *) = nullptr;
    CUresult (*MemHostGetDevicePointer)(CUdeviceptr *, void *, unsigned) = nullptr;
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, std::size_t, CUstream) = nullptr;
    CUresult (*MemcpyDtoHAsync)(void *, CUdeviceptr, std::size_t, CUstream) = nullptr;
    CUresult (*MemGetInfo)(std::size_t *, std::size_t *) = nullptr;
    CUresult (*StreamCreate)(CUstream *, unsigned) = nullptr;
    CUresult (*StreamDestroy)(CUstream) = nullptr;
    CUresult (*StreamSynchronize)(CUstream) = nullptr;
    CUresult (*GetErrorName)(CUresult, const char **) = nullptr;
    CUresult (*GetErrorString)(CUresult, const char **) = nullptr;
};

// Load dlopens the first loadable name of a ':'-separated list (NULL or ""
// means "libcuda.so.1") and resolves every entry point. On failure it
// returns false and says which library or symbol is missing, with dlerror's
// text for each candidate tried.
bool Load(Driver *d, const char *candidates, std::string *err);

// Error formats a failed call: "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (out
// of memory)". It works before cuInit and with a partly loaded driver.
std::string Error(const Driver &d, const char *call, CUresult r);

// Device is one GPU with its primary context retained. The primary context
// is the one the CUDA runtime inside TensorRT uses too, so the driver-API
// buffers and TensorRT's own allocations live in one context.
struct Device {
    const Driver *drv = nullptr;
    int ordinal = -1;
    CUdevice dev = 0;
    CUcontext ctx = nullptr;
    int cc_major = 0, cc_minor = 0;
    bool integrated = false;
    bool can_map_host = false;
    std::size_t total_mem = 0;
    std::string name;
    int driver_version = 0;
};

// Open runs cuInit, picks the device, retains its primary context and makes
// it current on the calling thread.
bool Open(const Driver &d, int ordinal, Device *out, std::string *err);
// MakeCurrent binds the device's context to the calling thread; every entry
// of the shim calls it first, since Go may have moved to another thread.
bool MakeCurrent(const Device &dev, std::string *err);
// Close releases the primary context (once per Open).
void Close(Device *dev);

// Buffer is one I/O tensor's memory: device memory plus a pinned host
// staging buffer, or, where zero_copy is set (integrated GPUs: Jetson), one
// mapped pinned allocation that the GPU reads through its device address,
// so no copies are made. It grows and never shrinks: tiles have one shape.
struct Buffer {
    CUdeviceptr device = 0; // what TensorRT is given (mapped address when zero_copy)
    void *host = nullptr;   // pinned staging memory
    std::size_t capacity = 0;
    bool zero_copy = false;
};

// Reserve makes b hold at least bytes (rounded up to kAlign), reallocating
// when it is too small; the contents are not kept.
bool Reserve(const Device &dev, Buffer *b, std::size_t bytes, bool zero_copy, std::string *err);
void Free(const Device &dev, Buffer *b);

// A run is Upload (each input), the engine, QueueDownload (the output),
// Sync, FinishDownload. Upload copies src into the pinned staging memory and
// queues the copy to the device on s (none when zero_copy). QueueDownload
// queues the device-to-staging copy (none when zero_copy); FinishDownload
// copies the staged bytes to dst once the stream is done. The caller's
// memory is touched only by the CPU, inside the call, so it may be Go
// memory: nothing keeps its address.
bool Upload(const Device &dev, Buffer *b, const void *src, std::size_t bytes, CUstream s, std::string *err);
bool QueueDownload(const Device &dev, Buffer *b, std::size_t bytes, CUstream s, std::string *err);
bool Sync(const Device &dev, CUstream s, std::string *err);
void FinishDownload(const Buffer &b, void *dst, std::size_t bytes);

} // namespace cu
} // namespace hidiff

#endif
