/*
 * fake_libcuda.c: a FAKE libcuda.so.1 for machines without a GPU, so that
 * check-headers.sh can run cuda_check against the shim's CUDA layer here:
 * it exercises the dlopen/dlsym of every versioned entry point, the
 * buffer bookkeeping and the copies, with "device memory" in host memory.
 * It proves nothing about a real driver; gpu-check.sh does that on a GPU.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
enum { OK = 0, INVALID_VALUE = 1, INVALID_DEVICE = 101 };

static int ctx_tag;
static __thread void *current;

CUresult cuInit(unsigned f) { (void)f; return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 12040; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *d, int o) { *d = o; return o == 0 ? OK : INVALID_DEVICE; }
CUresult cuDeviceGetName(char *s, int n, int d) {
    (void)d;
    strncpy(s, "Fake CUDA device", (size_t)n);
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int a, int d) {
    (void)d;
    *v = a == 75 ? 8 : a == 76 ? 7 : a == 19 ? 1 : 0;
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *b, int d) { (void)d; *b = (size_t)1 << 30; return OK; }
CUresult cuDevicePrimaryCtxRetain(void **c, int d) { (void)d; *c = &ctx_tag; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int d) { (void)d; return OK; }
CUresult cuCtxSetCurrent(void *c) { current = c; return OK; }
CUresult cuCtxGetCurrent(void **c) { *c = current; return OK; }
static CUresult alloc(void **p, size_t n) {
    if (current == NULL) {
        return 201; /* CUDA_ERROR_INVALID_CONTEXT: catches a missing MakeCurrent */
    }
    return posix_memalign(p, 256, n) == 0 ? OK : 2;
}
CUresult cuMemAlloc_v2(uint64_t *d, size_t n) {
    void *p = NULL;
    CUresult r = alloc(&p, n);
    *d = (uint64_t)(uintptr_t)p;
    return r;
}
CUresult cuMemFree_v2(uint64_t d) { return d == 0xdead0000ull ? INVALID_VALUE : (free((void *)(uintptr_t)d), OK); }
CUresult cuMemHostAlloc(void **p, size_t n, unsigned f) { (void)f; return alloc(p, n); }
CUresult cuMemFreeHost(void *p) { free(p); return OK; }
CUresult cuMemHostGetDevicePointer_v2(uint64_t *d, void *p, unsigned f) { (void)f; *d = (uint64_t)(uintptr_t)p; return OK; }
CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void *s, size_t n, void *st) {
    (void)st;
    if (d == 0) {
        return INVALID_VALUE;
    }
    memcpy((void *)(uintptr_t)d, s, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *h, uint64_t d, size_t n, void *st) {
    (void)st;
    memcpy(h, (void *)(uintptr_t)d, n);
    return OK;
}
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *f = (size_t)1 << 29; *t = (size_t)1 << 30; return OK; }
CUresult cuStreamCreate(void **s, unsigned f) { (void)f; *s = malloc(1); return OK; }
CUresult cuStreamDestroy_v2(void *s) { free(s); return OK; }
CUresult cuStreamSynchronize(void *s) { (void)s; return OK; }
CUresult cuGetErrorName(CUresult r, const char **s) {
    *s = r == INVALID_VALUE ? "CUDA_ERROR_INVALID_VALUE" : r == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : "CUDA_ERROR_UNKNOWN";
    return OK;
}
CUresult cuGetErrorString(CUresult r, const char **s) {
    *s = r == INVALID_VALUE ? "invalid argument" : "unknown error";
    return OK;
}
