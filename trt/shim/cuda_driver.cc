// cuda_driver.cc: see cuda_driver.h.
#include "cuda_driver.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>

namespace hidiff {
namespace cu {

namespace {

// Split splits a ':'-separated candidate list; empty parts are dropped.
std::string NextCandidate(const char **p) {
    std::string out;
    while (**p == ':') {
        ++*p;
    }
    while (**p != '\0' && **p != ':') {
        out += **p;
        ++*p;
    }
    return out;
}

// Sym resolves one entry point; the first of names that exists wins (the
// driver exports both cuDevicePrimaryCtxRelease_v2 and, for old callers,
// the unversioned name).
template <typename F>
bool Sym(void *h, F *fn, std::initializer_list<const char *> names, std::string *missing) {
    for (const char *n : names) {
        if (void *p = dlsym(h, n)) {
            *fn = reinterpret_cast<F>(p);
            return true;
        }
    }
    if (!missing->empty()) {
        *missing += ", ";
    }
    *missing += *names.begin();
    return false;
}

} // namespace

bool Load(Driver *d, const char *candidates, std::string *err) {
    if (candidates == nullptr || *candidates == '\0') {
        candidates = "libcuda.so.1";
    }
    std::string tried;
    for (const char *p = candidates; *p != '\0';) {
        std::string name = NextCandidate(&p);
        if (name.empty()) {
            continue;
        }
        // RTLD_LOCAL: our symbols are reached through dlsym only, and the
        // driver must not interpose on anything else in the process.
        void *h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            const char *e = dlerror();
            tried += "\n  " + name + ": " + (e != nullptr ? e : "not loadable");
            continue;
        }
        std::string missing;
        bool ok = true;
        ok &= Sym(h, &d->Init, {"cuInit"}, &missing);
        ok &= Sym(h, &d->DriverGetVersion, {"cuDriverGetVersion"}, &missing);
        ok &= Sym(h, &d->DeviceGetCount, {"cuDeviceGetCount"}, &missing);
        ok &= Sym(h, &d->DeviceGet, {"cuDeviceGet"}, &missing);
        ok &= Sym(h, &d->DeviceGetName, {"cuDeviceGetName"}, &missing);
        ok &= Sym(h, &d->DeviceGetAttribute, {"cuDeviceGetAttribute"}, &missing);
        ok &= Sym(h, &d->DeviceTotalMem, {"cuDeviceTotalMem_v2"}, &missing);
        ok &= Sym(h, &d->DevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}, &missing);
        ok &= Sym(h, &d->DevicePrimaryCtxRelease, {"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"},
                  &missing);
        ok &= Sym(h, &d->CtxSetCurrent, {"cuCtxSetCurrent"}, &missing);
        ok &= Sym(h, &d->CtxGetCurrent, {"cuCtxGetCurrent"}, &missing);
        ok &= Sym(h, &d->MemAlloc, {"cuMemAlloc_v2"}, &missing);
        ok &= Sym(h, &d->MemFree, {"cuMemFree_v2"}, &missing);
        ok &= Sym(h, &d->MemHostAlloc, {"cuMemHostAlloc"}, &missing);
        ok &= Sym(h, &d->MemFreeHost, {"cuMemFreeHost"}, &missing);
        ok &= Sym(h, &d->MemHostGetDevicePointer, {"cuMemHostGetDevicePointer_v2"}, &missing);
        ok &= Sym(h, &d->MemcpyHtoDAsync, {"cuMemcpyHtoDAsync_v2"}, &missing);
        ok &= Sym(h, &d->MemcpyDtoHAsync, {"cuMemcpyDtoHAsync_v2"}, &missing);
        ok &= Sym(h, &d->MemGetInfo, {"cuMemGetInfo_v2"}, &missing);
        ok &= Sym(h, &d->StreamCreate, {"cuStreamCreate"}, &missing);
        ok &= Sym(h, &d->StreamDestroy, {"cuStreamDestroy_v2"}, &missing);
        ok &= Sym(h, &d->StreamSynchronize, {"cuStreamSynchronize"}, &missing);
        ok &= Sym(h, &d->GetErrorName, {"cuGetErrorName"}, &missing);
        ok &= Sym(h, &d->GetErrorString, {"cuGetErrorString"}, &missing);
        if (!ok) {
            // An old or broken driver: say which entry points are absent.
            *err = "CUDA driver " + name + " lacks " + missing + " (driver too old?)";
            dlclose(h);
            *d = Driver{};
            return false;
        }
        d->handle = h;
        d->path = name;
        return true;
    }
    *err = "CUDA driver library not found (is the NVIDIA driver installed, and /dev/nvidia* or the Jetson "
           "devices visible?); tried:" + tried;
    return false;
}

std::string Error(const Driver &d, const char *call, CUresult r) {
    const char *name = nullptr;
    const char *text = nullptr;
    if (d.GetErrorName != nullptr && d.GetErrorName(r, &name) != SUCCESS) {
        name = nullptr;
    }
    if (d.GetErrorString != nullptr && d.GetErrorString(r, &text) != SUCCESS) {
        text = nullptr;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "CUresult %d", r);
    std::string out = std::string(call) + ": " + (name != nullptr ? name : buf);
    if (text != nullptr) {
        out += std::string(" (") + text + ")";
    }
    return out;
}

bool Open(const Driver &d, int ordinal, Device *out, std::string *err) {
    Device dev;
    dev.drv = &d;
    dev.ordinal = ordinal;
    CUresult r = d.Init(0);
    if (r != SUCCESS) {
        *err = Error(d, "cuInit", r);
        return false;
    }
    if ((r = d.DriverGetVersion(&dev.driver_version)) != SUCCESS) {
        *err = Error(d, "cuDriverGetVersion", r);
        return false;
    }
    int count = 0;
    if ((r = d.DeviceGetCount(&count)) != SUCCESS) {
        *err = Error(d, "cuDeviceGetCount", r);
        return false;
    }
    if (ordinal < 0 || ordinal >= count) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "CUDA device %d does not exist (%d device%s visible)", ordinal, count,
                      count == 1 ? "" : "s");
        *err = buf;
        return false;
    }
    if ((r = d.DeviceGet(&dev.dev, ordinal)) != SUCCESS) {
        *err = Error(d, "cuDeviceGet", r);
        return false;
    }
    char name[256] = {0};
    if ((r = d.DeviceGetName(name, sizeof name - 1, dev.dev)) != SUCCESS) {
        *err = Error(d, "cuDeviceGetName", r);
        return false;
    }
    dev.name = name;
    int v = 0;
    struct {
        int attr;
        const char *what;
        int *into;
    } attrs[] = {
        {ATTR_CC_MAJOR, "compute capability major", &dev.cc_major},
        {ATTR_CC_MINOR, "compute capability minor", &dev.cc_minor},
    };
    for (auto &a : attrs) {
        if ((r = d.DeviceGetAttribute(a.into, a.attr, dev.dev)) != SUCCESS) {
            *err = Error(d, "cuDeviceGetAttribute", r) + " reading the " + a.what;
            return false;
        }
    }
    if ((r = d.DeviceGetAttribute(&v, ATTR_INTEGRATED, dev.dev)) != SUCCESS) {
        *err = Error(d, "cuDeviceGetAttribute(INTEGRATED)", r);
        return false;
    }
    dev.integrated = v != 0;
    if ((r = d.DeviceGetAttribute(&v, ATTR_CAN_MAP_HOST_MEMORY, dev.dev)) != SUCCESS) {
        *err = Error(d, "cuDeviceGetAttribute(CAN_MAP_HOST_MEMORY)", r);
        return false;
    }
    dev.can_map_host = v != 0;
    if ((r = d.DeviceTotalMem(&dev.total_mem, dev.dev)) != SUCCESS) {
        *err = Error(d, "cuDeviceTotalMem", r);
        return false;
    }
    if ((r = d.DevicePrimaryCtxRetain(&dev.ctx, dev.dev)) != SUCCESS) {
        *err = Error(d, "cuDevicePrimaryCtxRetain", r);
        return false;
    }
    if ((r = d.CtxSetCurrent(dev.ctx)) != SUCCESS) {
        *err = Error(d, "cuCtxSetCurrent", r);
        d.DevicePrimaryCtxRelease(dev.dev);
        return false;
    }
    *out = dev;
    return true;
}

bool MakeCurrent(const Device &dev, std::string *err) {
    CUcontext cur = nullptr;
    // Skip the set when already current: cheap either way, but it keeps
    // the common case free of driver locking.
    if (dev.drv->CtxGetCurrent(&cur) == SUCCESS && cur == dev.ctx) {
        return true;
    }
    CUresult r = dev.drv->CtxSetCurrent(dev.ctx);
    if (r != SUCCESS) {
        *err = Error(*dev.drv, "cuCtxSetCurrent", r);
        return false;
    }
    return true;
}

void Close(Device *dev) {
    if (dev->drv == nullptr || dev->ctx == nullptr) {
        return;
    }
    CUcontext cur = nullptr;
    if (dev->drv->CtxGetCurrent(&cur) == SUCCESS && cur == dev->ctx) {
        dev->drv->CtxSetCurrent(nullptr);
    }
    dev->drv->DevicePrimaryCtxRelease(dev->dev);
    dev->ctx = nullptr;
}

bool Reserve(const Device &dev, Buffer *b, std::size_t bytes, bool zero_copy, std::string *err) {
    bytes = (bytes + kAlign - 1) / kAlign * kAlign;
    if (bytes == 0) {
        bytes = kAlign;
    }
    if (b->capacity >= bytes && b->zero_copy == zero_copy) {
        return true;
    }
    Free(dev, b);
    const Driver &d = *dev.drv;
    // Pinned host memory: page-locked, so the copy engine reads it by DMA
    // and cuMemcpy*Async really is asynchronous. With DEVICEMAP the GPU
    // can address it directly, which on an integrated GPU (same DRAM) is
    // the cheapest path of all.
    unsigned flags = MEMHOSTALLOC_PORTABLE | (zero_copy ? MEMHOSTALLOC_DEVICEMAP : 0u);
    CUresult r = d.MemHostAlloc(&b->host, bytes, flags);
    if (r != SUCCESS) {
        b->host = nullptr;
        *err = Error(d, "cuMemHostAlloc", r);
        return false;
    }
    if (zero_copy) {
        r = d.MemHostGetDevicePointer(&b->device, b->host, 0);
        if (r != SUCCESS) {
            *err = Error(d, "cuMemHostGetDevicePointer", r);
            Free(dev, b);
            return false;
        }
    } else {
        r = d.MemAlloc(&b->device, bytes);
        if (r != SUCCESS) {
            *err = Error(d, "cuMemAlloc", r);
            Free(dev, b);
            return false;
        }
    }
    if (b->device % kAlign != 0) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "device address 0x%llx is not %zu-byte aligned (TensorRT requires it)",
                      b->device, kAlign);
        *err = buf;
        Free(dev, b);
        return false;
    }
    b->capacity = bytes;
    b->zero_copy = zero_copy;
    return true;
}

void Free(const Device &dev, Buffer *b) {
    if (dev.drv == nullptr) {
        return;
    }
    if (b->device != 0 && !b->zero_copy) {
        dev.drv->MemFree(b->device);
    }
    if (b->host != nullptr) {
        dev.drv->MemFreeHost(b->host);
    }
    *b = Buffer{};
}

bool Upload(const Device &dev, Buffer *b, const void *src, std::size_t bytes, CUstream s, std::string *err) {
    if (bytes > b->capacity) {
        *err = "upload larger than its buffer";
        return false;
    }
    std::memcpy(b->host, src, bytes);
    if (b->zero_copy) {
        return true;
    }
    CUresult r = dev.drv->MemcpyHtoDAsync(b->device, b->host, bytes, s);
    if (r != SUCCESS) {
        *err = Error(*dev.drv, "cuMemcpyHtoDAsync", r);
        return false;
    }
    return true;
}

bool QueueDownload(const Device &dev, Buffer *b, std::size_t bytes, CUstream s, std::string *err) {
    if (bytes > b->capacity) {
        *err = "download larger than its buffer";
        return false;
    }
    if (b->zero_copy) {
        return true;
    }
    CUresult r = dev.drv->MemcpyDtoHAsync(b->host, b->device, bytes, s);
    if (r != SUCCESS) {
        *err = Error(*dev.drv, "cuMemcpyDtoHAsync", r);
        return false;
    }
    return true;
}

bool Sync(const Device &dev, CUstream s, std::string *err) {
    CUresult r = dev.drv->StreamSynchronize(s);
    if (r != SUCCESS) {
        *err = Error(*dev.drv, "cuStreamSynchronize", r);
        return false;
    }
    return true;
}

void FinishDownload(const Buffer &b, void *dst, std::size_t bytes) { std::memcpy(dst, b.host, bytes); }

} // namespace cu
} // namespace hidiff
