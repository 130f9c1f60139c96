// cuda_check.cc: a check of the shim's CUDA layer (shim/cuda_driver.cc) on a
// real GPU, without TensorRT: it runs the very code the shim uses to load
// libcuda.so.1 with dlopen, open the device's primary context, allocate
// device and pinned (optionally mapped) buffers, copy through a stream and
// free everything, and checks each step. Built and run by trt/gpu-check.sh.
//
// Output: one line per check, "ok   name: detail" or "FAIL name: detail",
// then "result: N checks, M failed". Exit status 0 only if none failed.
#include "../shim/cuda_driver.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace cu = hidiff::cu;

namespace {

int checks = 0, failed = 0;

void report(bool ok, const char *name, const std::string &detail) {
    ++checks;
    if (!ok) {
        ++failed;
    }
    std::printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name, detail.c_str());
    std::fflush(stdout);
}

std::string fmt(const char *f, long long a, long long b = 0) {
    char buf[256];
    std::snprintf(buf, sizeof buf, f, a, b);
    return buf;
}

// roundtrip copies a pattern host -> device -> host through b on stream s
// and compares, as the shim's engine_run does around the engine.
bool roundtrip(const cu::Device &dev, cu::Buffer *b, size_t n, cu::CUstream s, std::string *why) {
    std::vector<float> in(n), out(n, -1.0f);
    for (size_t i = 0; i < n; ++i) {
        in[i] = static_cast<float>(i % 1000) * 0.5f - 7.0f;
    }
    if (!cu::Upload(dev, b, in.data(), n * sizeof(float), s, why)) {
        return false;
    }
    // Clobber the staging buffer: the download must bring the data back
    // from the device, not find it still in host memory. (Zero-copy has
    // one buffer; there this checks only the mapped path.)
    if (!b->zero_copy) {
        if (!cu::Sync(dev, s, why)) {
            return false;
        }
        std::memset(b->host, 0, n * sizeof(float));
    }
    if (!cu::QueueDownload(dev, b, n * sizeof(float), s, why) || !cu::Sync(dev, s, why)) {
        return false;
    }
    cu::FinishDownload(*b, out.data(), n * sizeof(float));
    for (size_t i = 0; i < n; ++i) {
        if (out[i] != in[i]) {
            *why = fmt("element %lld differs", static_cast<long long>(i));
            return false;
        }
    }
    return true;
}

} // namespace

int main(int argc, char **argv) {
    const char *lib = argc > 1 ? argv[1] : nullptr;
    int ordinal = argc > 2 ? std::atoi(argv[2]) : 0;

    cu::Driver drv;
    std::string why;
    if (!cu::Load(&drv, lib, &why)) {
        report(false, "load", why);
        std::printf("result: %d checks, %d failed\n", checks, failed);
        return 1;
    }
    report(true, "load", drv.path);

    cu::Device dev;
    if (!cu::Open(drv, ordinal, &dev, &why)) {
        report(false, "open", why);
        std::printf("result: %d checks, %d failed\n", checks, failed);
        return 1;
    }
    report(true, "open",
           dev.name + ", cc " + std::to_string(dev.cc_major) + "." + std::to_string(dev.cc_minor) + ", driver " +
               std::to_string(dev.driver_version) + ", " + std::to_string(dev.total_mem >> 20) + " MiB" +
               (dev.integrated ? ", integrated" : "") + (dev.can_map_host ? ", can map host memory" : ""));

    // The error text for invalid calls, as the shim reports them.
    cu::Device bad;
    bool refused = !cu::Open(drv, 9999, &bad, &why);
    report(refused && why.find("does not exist") != std::string::npos, "error text: no such device", why);
    float host[4] = {0, 0, 0, 0};
    cu::CUresult r = drv.MemcpyHtoDAsync(0, host, sizeof host, nullptr); // NULL device pointer
    std::string text = cu::Error(drv, "cuMemcpyHtoDAsync", r);
    report(r != cu::SUCCESS && text.find("CUDA_ERROR_") != std::string::npos, "error text: invalid copy", text);
    r = drv.MemFree(0xdead0000ull);
    text = cu::Error(drv, "cuMemFree", r);
    report(r != cu::SUCCESS && text.find("CUDA_ERROR_") != std::string::npos, "error text: bad free", text);

    cu::CUstream s = nullptr;
    r = drv.StreamCreate(&s, cu::STREAM_NON_BLOCKING);
    report(r == cu::SUCCESS, "stream", r == cu::SUCCESS ? "created" : cu::Error(drv, "cuStreamCreate", r));

    // Device buffers: sizes that are not multiples of 256, all aligned.
    const size_t sizes[] = {1, 3, 255, 257, 1000, 3 * 384 * 384, 16 * 256, 3 * 1088 * 1920};
    bool aligned = true;
    std::vector<cu::Buffer> bufs(sizeof sizes / sizeof sizes[0]);
    for (size_t i = 0; i < bufs.size(); ++i) {
        if (!cu::Reserve(dev, &bufs[i], sizes[i] * sizeof(float), false, &why)) {
            report(false, "reserve", why);
            aligned = false;
            break;
        }
        aligned = aligned && bufs[i].device % cu::kAlign == 0 &&
                  reinterpret_cast<uintptr_t>(bufs[i].host) % cu::kAlign == 0 && bufs[i].capacity % cu::kAlign == 0;
    }
    report(aligned, "alignment", fmt("%lld buffers, device and pinned host addresses %lld-byte aligned",
                                     static_cast<long long>(bufs.size()), static_cast<long long>(cu::kAlign)));

    for (size_t i = 0; i < bufs.size(); ++i) {
        bool ok = bufs[i].capacity > 0 && roundtrip(dev, &bufs[i], sizes[i], s, &why);
        report(ok, "copy", fmt("%lld floats host->device->host: ", static_cast<long long>(sizes[i])) +
                               (ok ? "identical" : why));
    }

    // Growing a buffer reallocates; shrinking keeps it.
    cu::Buffer g;
    bool grow = cu::Reserve(dev, &g, 1024, false, &why);
    cu::CUdeviceptr first = g.device;
    grow = grow && cu::Reserve(dev, &g, 512, false, &why) && g.device == first;
    grow = grow && cu::Reserve(dev, &g, 1 << 20, false, &why) && g.capacity >= (1u << 20) && roundtrip(dev, &g, 1 << 18, s, &why);
    report(grow, "grow", grow ? "kept when smaller, reallocated when larger" : why);
    cu::Free(dev, &g);

    // Mapped pinned memory (what the shim uses on integrated GPUs).
    if (dev.can_map_host) {
        cu::Buffer z;
        bool ok = cu::Reserve(dev, &z, 3 * 256 * 256 * sizeof(float), true, &why) && z.zero_copy &&
                  z.device % cu::kAlign == 0 && roundtrip(dev, &z, 3 * 256 * 256, s, &why);
        report(ok, "zero-copy", ok ? "mapped pinned buffer usable" : why);
        cu::Free(dev, &z);
    }

    // The context from another OS thread, as the Go worker thread does:
    // the shim's MakeCurrent binds it there before each call.
    bool other = false;
    std::string owhy;
    std::thread t([&] {
        cu::CUcontext cur = nullptr;
        drv.CtxGetCurrent(&cur);
        bool fresh = cur == nullptr; // a new thread has no current context
        if (!cu::MakeCurrent(dev, &owhy)) {
            return;
        }
        cu::CUstream s2 = nullptr;
        if (drv.StreamCreate(&s2, cu::STREAM_NON_BLOCKING) != cu::SUCCESS) {
            owhy = "cuStreamCreate on the second thread failed";
            return;
        }
        cu::Buffer b;
        other = fresh && cu::Reserve(dev, &b, 4096 * sizeof(float), false, &owhy) && roundtrip(dev, &b, 4096, s2, &owhy);
        cu::Free(dev, &b);
        drv.StreamDestroy(s2);
    });
    t.join();
    report(other, "other thread", other ? "context made current, buffer copied, freed" : owhy);

    // Free everything and check the memory came back.
    size_t free0 = 0, total = 0, free1 = 0;
    drv.MemGetInfo(&free0, &total);
    for (auto &b : bufs) {
        cu::Free(dev, &b);
    }
    r = drv.StreamSynchronize(s);
    drv.StreamDestroy(s);
    drv.MemGetInfo(&free1, &total);
    report(free1 + (1u << 20) >= free0, "free", fmt("free memory %lld MiB -> %lld MiB", static_cast<long long>(free0 >> 20),
                                       static_cast<long long>(free1 >> 20)));
    cu::Close(&dev);
    cu::CUcontext cur = nullptr;
    drv.CtxGetCurrent(&cur);
    report(cur == nullptr, "close", "primary context released and unbound");

    std::printf("result: %d checks, %d failed\n", checks, failed);
    return failed == 0 ? 0 : 1;
}
