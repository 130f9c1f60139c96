// hidiff_trt.cc: the TensorRT side of hidiff_trt.h.
//
// Compiled only with the Go build tag `tensorrt` (through ../shim_tensorrt.cc)
// or by check-headers.sh. It includes TensorRT's public headers for the class
// layouts, but links against nothing of TensorRT or CUDA: libnvinfer,
// libnvonnxparser and libcuda are opened with dlopen, and only the C entry
// points TensorRT's own inline helpers call (createInferRuntime_INTERNAL,
// createInferBuilder_INTERNAL, createNvOnnxParser_INTERNAL,
// getInferLibVersion) are looked up with dlsym. Everything else is a virtual
// call on objects those return. So the binary starts without TensorRT, and
// says which library is missing when asked to use it.
//
// Versions: the C++ classes change layout between TensorRT major versions,
// so a shim compiled against 10.x headers can only drive a 10.x library, and
// within a major only a library at least as new as the headers (methods are
// appended). open() checks getInferLibVersion() against NV_TENSORRT_VERSION
// and refuses a mismatch by name. API differences between 8.5/8.6, 10.x and
// 11.x are compile-time branches on NV_TENSORRT_MAJOR; the name-based tensor
// API (getIOTensorName, setInputShape, setTensorAddress, enqueueV3), `delete`
// instead of destroy(), buildSerializedNetwork and setMemoryPoolLimit exist
// in every supported version and are used throughout.
//
// Typing (hidiff_trt.h, HIDIFF_TRT_TYPING_*): 8.x builds weakly typed
// networks only (kFP16 plus FP32 precision constraints); 10.x both, strongly
// typed with NetworkDefinitionCreationFlag::kSTRONGLY_TYPED; 11.x strongly
// typed only (kFP16, kOBEY_PRECISION_CONSTRAINTS, ILayer::setPrecision and
// setOutputType are gone, deprecated since 10.12), so the weakly typed code
// is not compiled for it.
#include "../hidiff_trt.h"
#include "cuda_driver.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#if NV_TENSORRT_MAJOR < 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR < 5) || NV_TENSORRT_MAJOR == 9 ||       \
    NV_TENSORRT_MAJOR > 11
#error "hidiffd's TensorRT shim supports TensorRT 8.5 to 8.6, 10.x and 11.x headers"
#endif

// The typing modes this shim can build with (see the top of the file).
#if NV_TENSORRT_MAJOR < 10
#define HIDIFF_TYPING_MODES HIDIFF_TRT_TYPING_WEAK
#elif NV_TENSORRT_MAJOR == 10
#define HIDIFF_TYPING_MODES (HIDIFF_TRT_TYPING_WEAK | HIDIFF_TRT_TYPING_STRONG)
#else
#define HIDIFF_TYPING_MODES HIDIFF_TRT_TYPING_STRONG
#endif

using namespace nvinfer1;
namespace cu = hidiff::cu;

namespace {

// ---------------------------------------------------------------- errors

void SetErr(char *err, size_t len, const std::string &msg) {
    if (err == nullptr || len == 0) {
        return;
    }
    size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

int Fail(char *err, size_t len, int status, const std::string &msg) {
    SetErr(err, len, msg);
    return status;
}

std::string Itoa(long long v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%lld", v);
    return buf;
}

std::string VersionText(long v) {
    // getInferLibVersion encodes 8.x as major*1000+minor*100+patch and
    // 10.x and later as major*10000+minor*100+patch.
    long major = v >= 100000 ? v / 10000 : v / 1000;
    long rest = v >= 100000 ? v % 10000 : v % 1000;
    return Itoa(major) + "." + Itoa(rest / 100) + "." + Itoa(rest % 100);
}

// ---------------------------------------------------------------- logger

// Logger is TensorRT's ILogger for the whole process. TensorRT documents
// that the logger passed first is used by every builder and runtime
// afterwards, so there is exactly one, never destroyed (TensorRT threads may
// still log during exit). Messages at or above the configured severity go
// to a bounded queue that Go drains (log_read) and, when a descriptor is
// set, straight to it as one line each (the builder's progress, read by the
// daemon from the child's stderr). Errors logged on the calling thread
// during an entry are also collected so the entry's error text can carry
// them: TensorRT's return values say only "failed".
class Logger : public ILogger {
public:
    void log(Severity severity, AsciiChar const *msg) noexcept override {
        int sev = static_cast<int>(severity);
        try {
            if (sev <= static_cast<int>(Severity::kERROR) && collecting_) {
                if (!errors_.empty()) {
                    errors_ += "; ";
                }
                errors_ += msg;
            }
            std::lock_guard<std::mutex> lock(mu_);
            if (sev > severity_) {
                return;
            }
            if (fd_ >= 0) {
                static const char *tags[] = {"F", "E", "W", "I", "V"};
                std::string line = std::string("tensorrt: [") + tags[sev < 0 || sev > 4 ? 4 : sev] + "] " + msg;
                if (line.empty() || line.back() != '\n') {
                    line += '\n';
                }
                // A short write to a pipe or terminal is not worth retrying:
                // these lines are progress, not data.
                ssize_t n = write(fd_, line.data(), line.size());
                (void)n;
            }
            if (queue_.size() >= kQueueMax) {
                queue_.pop_front();
                ++dropped_;
            }
            queue_.emplace_back(sev, msg);
        } catch (...) {
            // Out of memory while logging: drop the message.
        }
    }

    void Configure(int severity, int fd) {
        std::lock_guard<std::mutex> lock(mu_);
        severity_ = severity;
        fd_ = fd;
    }

    // Forget fd (a closing runtime's): the descriptor may be closed and its
    // number reused once the runtime is gone, and TensorRT may still log.
    void Forget(int fd) {
        std::lock_guard<std::mutex> lock(mu_);
        if (fd_ == fd) {
            fd_ = -1;
        }
    }

    bool Pop(int32_t *severity, std::string *msg) {
        std::lock_guard<std::mutex> lock(mu_);
        if (dropped_ > 0) {
            *severity = static_cast<int32_t>(Severity::kWARNING);
            *msg = Itoa(dropped_) + " TensorRT log messages dropped (queue full)";
            dropped_ = 0;
            return true;
        }
        if (queue_.empty()) {
            return false;
        }
        *severity = queue_.front().first;
        *msg = std::move(queue_.front().second);
        queue_.pop_front();
        return true;
    }

    // Scope collects the calling thread's error messages for one entry.
    struct Scope {
        Scope() {
            errors_.clear();
            collecting_ = true;
        }
        ~Scope() { collecting_ = false; }
        // With appends TensorRT's own words to a message.
        std::string With(const std::string &msg) const {
            return errors_.empty() ? msg : msg + ": " + errors_;
        }
    };

private:
    static constexpr size_t kQueueMax = 256;
    std::mutex mu_;
    std::deque<std::pair<int, std::string>> queue_;
    long long dropped_ = 0;
    int severity_ = static_cast<int>(Severity::kWARNING);
    int fd_ = -1;
    static thread_local std::string errors_;
    static thread_local bool collecting_;
};

thread_local std::string Logger::errors_;
thread_local bool Logger::collecting_ = false;

Logger &TheLogger() {
    static Logger *l = new Logger; // intentionally never freed, see Logger
    return *l;
}

// ---------------------------------------------------------------- libraries

// Libs are loaded once per process and never unloaded: unloading a C++
// runtime that may own static objects and threads is a crash risk for no
// gain, and a second runtime (a model reload) reuses them.
struct Libs {
    std::mutex mu;
    bool nvinfer_ok = false;
    bool parser_ok = false;
    bool cuda_ok = false;
    std::string nvinfer_path;
    int32_t version = 0;
    int32_t (*getInferLibVersion)() = nullptr;
    void *(*createInferRuntime)(void *, int32_t) = nullptr;
    void *(*createInferBuilder)(void *, int32_t) = nullptr;
    void *(*createNvOnnxParser)(void *, void *, int) = nullptr;
    cu::Driver cuda;
};

Libs &TheLibs() {
    static Libs *l = new Libs; // never freed, see Libs
    return *l;
}

// DefaultNvinfer is the major built against, then the other supported
// majors: those are loaded only to be refused by name ("TensorRT 10.3.0, but
// this hidiffd was built against 11.1 headers"), never used.
std::string DefaultNvinfer() {
    std::string list = "libnvinfer.so." + Itoa(NV_TENSORRT_MAJOR);
    for (int major : {11, 10, 8}) {
        if (major != NV_TENSORRT_MAJOR) {
            list += ":libnvinfer.so." + Itoa(major);
        }
    }
    return list;
}

std::string HeaderVersion() { return Itoa(NV_TENSORRT_MAJOR) + "." + Itoa(NV_TENSORRT_MINOR); }

std::vector<std::string> SplitList(const char *s) {
    std::vector<std::string> out;
    std::string cur;
    for (; s != nullptr && *s != '\0'; ++s) {
        if (*s == ':') {
            if (!cur.empty()) {
                out.push_back(cur);
            }
            cur.clear();
        } else {
            cur += *s;
        }
    }
    if (!cur.empty()) {
        out.push_back(cur);
    }
    return out;
}

// LoadNvinfer opens the first candidate whose version this shim can drive.
int LoadNvinfer(Libs &L, const char *candidates, std::string *err) {
    std::string list = candidates != nullptr && *candidates != '\0' ? candidates : DefaultNvinfer();
    std::string tried;
    int status = HIDIFF_TRT_E_LIBRARY;
    for (const std::string &name : SplitList(list.c_str())) {
        void *h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            const char *e = dlerror();
            tried += "\n  " + name + ": " + (e != nullptr ? e : "not loadable");
            continue;
        }
        auto ver = reinterpret_cast<int32_t (*)()>(dlsym(h, "getInferLibVersion"));
        auto rt = reinterpret_cast<void *(*)(void *, int32_t)>(dlsym(h, "createInferRuntime_INTERNAL"));
        auto bld = reinterpret_cast<void *(*)(void *, int32_t)>(dlsym(h, "createInferBuilder_INTERNAL"));
        if (ver == nullptr || rt == nullptr || bld == nullptr) {
            tried += "\n  " + name + ": loaded, but lacks getInferLibVersion/createInferRuntime_INTERNAL/"
                                     "createInferBuilder_INTERNAL (not TensorRT?)";
            dlclose(h);
            continue;
        }
        int32_t v = ver();
        long major = v >= 100000 ? v / 10000 : v / 1000;
        long minor = (v >= 100000 ? v % 10000 : v % 1000) / 100;
        if (major != NV_TENSORRT_MAJOR || minor < NV_TENSORRT_MINOR) {
            // The classes' virtual tables differ between majors, and a
            // newer minor's headers may call methods an older library
            // lacks: either would crash, so refuse by name.
            tried += "\n  " + name + ": TensorRT " + VersionText(v) + ", but this hidiffd was built against " +
                     "TensorRT " + HeaderVersion() + " headers (needs " + HeaderVersion() +
                     " or a later " + Itoa(NV_TENSORRT_MAJOR) + ".x)";
            status = HIDIFF_TRT_E_VERSION;
            dlclose(h);
            continue;
        }
        L.getInferLibVersion = ver;
        L.createInferRuntime = rt;
        L.createInferBuilder = bld;
        L.version = v;
        L.nvinfer_path = name;
        L.nvinfer_ok = true;
        return HIDIFF_TRT_OK;
    }
    *err = "TensorRT library not usable; tried:" + tried;
    return status;
}

int LoadParser(Libs &L, const char *candidates, std::string *err) {
    std::string list = candidates != nullptr && *candidates != '\0'
                           ? candidates
                           : "libnvonnxparser.so." + Itoa(NV_TENSORRT_MAJOR);
    std::string tried;
    for (const std::string &name : SplitList(list.c_str())) {
        void *h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) {
            const char *e = dlerror();
            tried += "\n  " + name + ": " + (e != nullptr ? e : "not loadable");
            continue;
        }
        auto p = reinterpret_cast<void *(*)(void *, void *, int)>(dlsym(h, "createNvOnnxParser_INTERNAL"));
        if (p == nullptr) {
            tried += "\n  " + name + ": lacks createNvOnnxParser_INTERNAL";
            dlclose(h);
            continue;
        }
        L.createNvOnnxParser = p;
        L.parser_ok = true;
        return HIDIFF_TRT_OK;
    }
    *err = "TensorRT ONNX parser library not usable (needed to build engines); tried:" + tried;
    return HIDIFF_TRT_E_LIBRARY;
}

// ---------------------------------------------------------------- helpers

int32_t DtypeOf(DataType t) {
    switch (t) {
    case DataType::kFLOAT:
        return HIDIFF_TRT_DT_FLOAT;
    case DataType::kHALF:
        return HIDIFF_TRT_DT_HALF;
    case DataType::kINT32:
        return HIDIFF_TRT_DT_INT32;
    case DataType::kINT8:
        return HIDIFF_TRT_DT_INT8;
    case DataType::kBOOL:
        return HIDIFF_TRT_DT_BOOL;
#if NV_TENSORRT_MAJOR >= 10
    case DataType::kINT64:
        return HIDIFF_TRT_DT_INT64;
#endif
#if NV_TENSORRT_MAJOR >= 10
    case DataType::kBF16:
        return HIDIFF_TRT_DT_BF16;
#endif
    default:
        return HIDIFF_TRT_DT_OTHER;
    }
}

// Dims is int32 in 8.x and int64 in 10.x; these copy through int64.
void FromDims(const Dims &d, int64_t *out, int32_t *rank) {
    *rank = d.nbDims;
    for (int i = 0; i < HIDIFF_TRT_MAX_DIMS; ++i) {
        out[i] = i < d.nbDims ? static_cast<int64_t>(d.d[i]) : 0;
    }
}

Dims ToDims(const int64_t *in, int32_t rank) {
    Dims d{};
    d.nbDims = rank;
    for (int i = 0; i < rank; ++i) {
        d.d[i] = static_cast<decltype(d.d[0] + 0)>(in[i]);
    }
    return d;
}

std::string DimsText(const int64_t *d, int32_t rank) {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) {
        s += (i > 0 ? " " : "") + Itoa(d[i]);
    }
    return s + "]";
}

std::string DimsText(const Dims &d) {
    int64_t v[HIDIFF_TRT_MAX_DIMS];
    int32_t r = 0;
    FromDims(d, v, &r);
    return DimsText(v, r);
}

// Volume is the element count of fully specified dims, or -1.
int64_t Volume(const Dims &d) {
    int64_t n = 1;
    for (int i = 0; i < d.nbDims; ++i) {
        if (d.d[i] < 0) {
            return -1;
        }
        if (d.d[i] != 0 && n > (int64_t(1) << 40) / d.d[i]) {
            return -1; // absurd; refuse rather than overflow
        }
        n *= d.d[i];
    }
    return n;
}

bool WriteFile(const std::string &path, const void *data, size_t size, std::string *err) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        *err = "creating " + path + ": " + std::strerror(errno);
        return false;
    }
    const char *p = static_cast<const char *>(data);
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            *err = "writing " + path + ": " + std::strerror(errno);
            close(fd);
            return false;
        }
        p += n;
        size -= static_cast<size_t>(n);
    }
    // The engine is large and slow to rebuild: make it durable before the
    // caller renames it into the cache.
    if (fsync(fd) != 0 || close(fd) != 0) {
        *err = "syncing " + path + ": " + std::strerror(errno);
        return false;
    }
    return true;
}

bool ReadFile(const std::string &path, std::vector<char> *out, bool *missing) {
    *missing = false;
    FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        *missing = errno == ENOENT;
        return false;
    }
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        out->insert(out->end(), buf, buf + n);
    }
    bool ok = !std::ferror(f);
    std::fclose(f);
    return ok;
}

template <typename T>
struct Deleter {
    void operator()(T *p) const { delete p; }
};
template <typename T>
using Owned = std::unique_ptr<T, Deleter<T>>;

} // namespace

// ---------------------------------------------------------------- handles

struct hidiff_trt_runtime {
    cu::Device dev;
    IRuntime *runtime = nullptr;
    int engines = 0;
    bool zero_copy = false;
    int log_fd = -1;
};

struct hidiff_trt_engine {
    hidiff_trt_runtime *rt = nullptr;
    ICudaEngine *engine = nullptr;
    IExecutionContext *ctx = nullptr;
    cu::CUstream stream = nullptr;
    bool bound = false;
    bool shapes_set = false;
    std::string names[3]; // in0, in1, out
    cu::Buffer buf[3];
    size_t count[3] = {0, 0, 0}; // float elements for the shapes set
};

namespace {

// Entry is the common prologue of every entry point: it starts collecting
// TensorRT's error lines and makes the runtime's context current on this
// thread (Go may have run the previous call on another one).
struct Entry {
    Logger::Scope scope;
    std::string why;
    bool Current(const hidiff_trt_runtime *rt) { return cu::MakeCurrent(rt->dev, &why); }
};

#define HIDIFF_GUARD_BEGIN try {
#define HIDIFF_GUARD_END                                                                                      \
    }                                                                                                         \
    catch (const std::bad_alloc &) {                                                                          \
        return Fail(err, errlen, HIDIFF_TRT_E_NOMEM, "out of host memory");                                   \
    }                                                                                                         \
    catch (...) {                                                                                             \
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, "unexpected C++ exception in the TensorRT shim");      \
    }

// ---------------------------------------------------------------- runtime

int Open(const hidiff_trt_open_options *o, hidiff_trt_runtime **out, char *err, size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (o == nullptr || out == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "open: NULL argument");
    }
    *out = nullptr;
    Logger::Scope scope;
    Libs &L = TheLibs();
    std::string why;
    {
        std::lock_guard<std::mutex> lock(L.mu);
        if (!L.cuda_ok) {
            if (!cu::Load(&L.cuda, o->cuda_libs, &why)) {
                return Fail(err, errlen, HIDIFF_TRT_E_LIBRARY, why);
            }
            L.cuda_ok = true;
        }
        if (!L.nvinfer_ok) {
            int st = LoadNvinfer(L, o->nvinfer_libs, &why);
            if (st != HIDIFF_TRT_OK) {
                return Fail(err, errlen, st, why);
            }
        }
        if (o->need_parser != 0 && !L.parser_ok) {
            int st = LoadParser(L, o->onnxparser_libs, &why);
            if (st != HIDIFF_TRT_OK) {
                return Fail(err, errlen, st, why);
            }
        }
    }
    int sev = o->log_severity;
    if (sev < HIDIFF_TRT_LOG_INTERNAL_ERROR || sev > HIDIFF_TRT_LOG_VERBOSE) {
        sev = HIDIFF_TRT_LOG_WARNING;
    }
    TheLogger().Configure(sev, o->log_fd);

    std::unique_ptr<hidiff_trt_runtime> rt(new hidiff_trt_runtime);
    rt->log_fd = o->log_fd;
    if (!cu::Open(L.cuda, o->device, &rt->dev, &why)) {
        int st = why.find("does not exist") != std::string::npos || why.find("NO_DEVICE") != std::string::npos
                     ? HIDIFF_TRT_E_NO_DEVICE
                     : HIDIFF_TRT_E_CUDA;
        TheLogger().Forget(o->log_fd);
        return Fail(err, errlen, st, why);
    }
    // Zero-copy where the GPU shares the CPU's memory (Jetson): the GPU
    // reads the pinned host buffer in place, which saves two copies of
    // every tile through the same DRAM.
    rt->zero_copy = rt->dev.integrated && rt->dev.can_map_host;
    rt->runtime = static_cast<IRuntime *>(L.createInferRuntime(&TheLogger(), NV_TENSORRT_VERSION));
    if (rt->runtime == nullptr) {
        std::string msg = scope.With("createInferRuntime failed");
        cu::Close(&rt->dev);
        TheLogger().Forget(o->log_fd);
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, msg);
    }
    *out = rt.release();
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

int DeviceInfo(hidiff_trt_runtime *rt, hidiff_trt_device_info *out, char *err, size_t errlen) {
    if (rt == nullptr || out == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "device_info: NULL argument");
    }
    Libs &L = TheLibs();
    std::lock_guard<std::mutex> lock(L.mu);
    std::memset(out, 0, sizeof *out);
    out->trt_version = L.version;
    out->trt_header_version = static_cast<int32_t>(NV_TENSORRT_VERSION);
    out->cuda_driver_version = rt->dev.driver_version;
    out->cc_major = rt->dev.cc_major;
    out->cc_minor = rt->dev.cc_minor;
    out->integrated = rt->dev.integrated ? 1 : 0;
    out->can_map_host = rt->dev.can_map_host ? 1 : 0;
    out->zero_copy = rt->zero_copy ? 1 : 0;
    out->total_mem = static_cast<int64_t>(rt->dev.total_mem);
    out->typing_modes = HIDIFF_TYPING_MODES;
    std::snprintf(out->gpu_name, sizeof out->gpu_name, "%s", rt->dev.name.c_str());
    std::snprintf(out->nvinfer_path, sizeof out->nvinfer_path, "%s", L.nvinfer_path.c_str());
    std::snprintf(out->cuda_path, sizeof out->cuda_path, "%s", L.cuda.path.c_str());
    return HIDIFF_TRT_OK;
}

int LogRead(hidiff_trt_runtime *, int32_t *severity, char *buf, size_t len) {
    std::string msg;
    try {
        if (!TheLogger().Pop(severity, &msg)) {
            return 0;
        }
    } catch (...) {
        return 0;
    }
    SetErr(buf, len, msg);
    return 1;
}

int Close(hidiff_trt_runtime *rt, char *err, size_t errlen) {
    if (rt == nullptr) {
        return HIDIFF_TRT_OK;
    }
    if (rt->engines > 0) {
        return Fail(err, errlen, HIDIFF_TRT_E_BUSY,
                    "close: " + Itoa(rt->engines) + " engine(s) of this runtime are still open");
    }
    Entry e;
    e.Current(rt); // best effort: free what we can even if this fails
    delete rt->runtime;
    cu::Close(&rt->dev);
    if (rt->log_fd >= 0) {
        TheLogger().Forget(rt->log_fd);
    }
    delete rt;
    return HIDIFF_TRT_OK;
}

// ---------------------------------------------------------------- engines

void FreeEngine(hidiff_trt_engine *e) {
    const cu::Device &dev = e->rt->dev;
    if (e->stream != nullptr) {
        // Nothing may still run on the buffers freed below.
        dev.drv->StreamSynchronize(e->stream);
    }
    delete e->ctx; // before its engine
    delete e->engine;
    for (auto &b : e->buf) {
        cu::Free(dev, &b);
    }
    if (e->stream != nullptr) {
        dev.drv->StreamDestroy(e->stream);
    }
}

int EngineLoad(hidiff_trt_runtime *rt, const void *plan, size_t size, hidiff_trt_engine **out, char *err,
               size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (rt == nullptr || plan == nullptr || out == nullptr || size == 0) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_load: NULL or empty argument");
    }
    *out = nullptr;
    Entry en;
    if (!en.Current(rt)) {
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, en.why);
    }
    std::unique_ptr<hidiff_trt_engine> e(new hidiff_trt_engine);
    e->rt = rt;
    e->engine = rt->runtime->deserializeCudaEngine(plan, size);
    if (e->engine == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_DESERIALIZE,
                    en.scope.With("the engine does not deserialize (corrupt, or built by another TensorRT "
                                  "version or for another GPU)"));
    }
    if (e->engine->getNbOptimizationProfiles() < 1) {
        std::string msg = "the engine has no optimisation profile";
        FreeEngine(e.get());
        return Fail(err, errlen, HIDIFF_TRT_E_DESERIALIZE, msg);
    }
    cu::CUresult r = rt->dev.drv->StreamCreate(&e->stream, cu::STREAM_NON_BLOCKING);
    if (r != cu::SUCCESS) {
        e->stream = nullptr;
        std::string msg = cu::Error(*rt->dev.drv, "cuStreamCreate", r);
        FreeEngine(e.get());
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, msg);
    }
    e->ctx = e->engine->createExecutionContext();
    if (e->ctx == nullptr) {
        std::string msg = en.scope.With("createExecutionContext failed (out of GPU memory?)");
        FreeEngine(e.get());
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, msg);
    }
    rt->engines++;
    *out = e.release();
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

int EngineTensorCount(hidiff_trt_engine *e, int32_t *count, char *err, size_t errlen) {
    if (e == nullptr || count == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_tensor_count: NULL argument");
    }
    *count = e->engine->getNbIOTensors();
    return HIDIFF_TRT_OK;
}

int EngineTensor(hidiff_trt_engine *e, int32_t index, hidiff_trt_tensor_desc *out, char *err, size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (e == nullptr || out == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_tensor: NULL argument");
    }
    if (index < 0 || index >= e->engine->getNbIOTensors()) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_tensor: index " + Itoa(index) + " out of range");
    }
    std::memset(out, 0, sizeof *out);
    const char *name = e->engine->getIOTensorName(index);
    if (std::strlen(name) >= HIDIFF_TRT_NAME_LEN) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, std::string("tensor name too long: ") + name);
    }
    std::snprintf(out->name, sizeof out->name, "%s", name);
    out->is_input = e->engine->getTensorIOMode(name) == TensorIOMode::kINPUT ? 1 : 0;
    out->dtype = DtypeOf(e->engine->getTensorDataType(name));
    out->linear = e->engine->getTensorFormat(name) == TensorFormat::kLINEAR ? 1 : 0;
    FromDims(e->engine->getTensorShape(name), out->dims, &out->rank);
    if (out->is_input != 0) {
        int32_t r = 0;
        FromDims(e->engine->getProfileShape(name, 0, OptProfileSelector::kMIN), out->profile_min, &r);
        FromDims(e->engine->getProfileShape(name, 0, OptProfileSelector::kOPT), out->profile_opt, &r);
        FromDims(e->engine->getProfileShape(name, 0, OptProfileSelector::kMAX), out->profile_max, &r);
    }
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

int EngineBind(hidiff_trt_engine *e, const char *in0, const char *in1, const char *outname, char *err,
               size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (e == nullptr || in0 == nullptr || in1 == nullptr || outname == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_bind: NULL argument");
    }
    const char *names[3] = {in0, in1, outname};
    for (int k = 0; k < 3; ++k) {
        TensorIOMode want = k < 2 ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
        TensorIOMode got = e->engine->getTensorIOMode(names[k]);
        if (got != want) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        std::string("the engine has no ") + (k < 2 ? "input" : "output") + " named \"" +
                            names[k] + "\"");
        }
        if (e->engine->getTensorDataType(names[k]) != DataType::kFLOAT ||
            e->engine->getTensorFormat(names[k]) != TensorFormat::kLINEAR) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        std::string("tensor \"") + names[k] + "\" is not linear float32");
        }
        e->names[k] = names[k];
    }
    e->bound = true;
    e->shapes_set = false;
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

int EngineSetShapes(hidiff_trt_engine *e, const int64_t *dims0, int32_t rank0, const int64_t *dims1, int32_t rank1,
                    int64_t *out_dims, int32_t *out_rank, char *err, size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (e == nullptr || dims0 == nullptr || dims1 == nullptr || out_dims == nullptr || out_rank == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_set_shapes: NULL argument");
    }
    if (!e->bound) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_set_shapes before engine_bind");
    }
    Entry en;
    if (!en.Current(e->rt)) {
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, en.why);
    }
    e->shapes_set = false;
    const int64_t *dims[2] = {dims0, dims1};
    const int32_t ranks[2] = {rank0, rank1};
    for (int k = 0; k < 2; ++k) {
        const char *name = e->names[k].c_str();
        Dims lo = e->engine->getProfileShape(name, 0, OptProfileSelector::kMIN);
        Dims hi = e->engine->getProfileShape(name, 0, OptProfileSelector::kMAX);
        if (ranks[k] != lo.nbDims) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        "input \"" + e->names[k] + "\" has rank " + Itoa(ranks[k]) + ", the engine's is " +
                            Itoa(lo.nbDims));
        }
        // Checked here rather than left to setInputShape so the message
        // names the range and the remedy, not just "invalid dimensions".
        for (int i = 0; i < ranks[k]; ++i) {
            if (dims[k][i] < lo.d[i] || dims[k][i] > hi.d[i]) {
                return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                            "input \"" + e->names[k] + "\" shape " + DimsText(dims[k], ranks[k]) +
                                " is outside the engine's optimisation profile " + DimsText(lo) + ".." +
                                DimsText(hi) + " (rebuild the engine for this tile size)");
            }
        }
        if (!e->ctx->setInputShape(name, ToDims(dims[k], ranks[k]))) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        en.scope.With("setInputShape(" + e->names[k] + ", " + DimsText(dims[k], ranks[k]) +
                                      ") refused"));
        }
    }
    Dims od = e->ctx->getTensorShape(e->names[2].c_str());
    int64_t shapes[3] = {Volume(ToDims(dims0, rank0)), Volume(ToDims(dims1, rank1)), Volume(od)};
    if (shapes[2] < 0) {
        return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                    en.scope.With("output \"" + e->names[2] + "\" shape " + DimsText(od) +
                                  " is not resolved by the input shapes"));
    }
    for (int k = 0; k < 3; ++k) {
        if (shapes[k] < 0) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE, "tensor \"" + e->names[k] + "\" has an invalid shape");
        }
        std::string why;
        if (!cu::Reserve(e->rt->dev, &e->buf[k], static_cast<size_t>(shapes[k]) * sizeof(float), e->rt->zero_copy,
                         &why)) {
            return Fail(err, errlen, HIDIFF_TRT_E_NOMEM, "buffer for \"" + e->names[k] + "\": " + why);
        }
        // Reserve may have moved the buffer: (re)bind the address every time.
        if (!e->ctx->setTensorAddress(e->names[k].c_str(), reinterpret_cast<void *>(e->buf[k].device))) {
            return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT,
                        en.scope.With("setTensorAddress(" + e->names[k] + ") refused"));
        }
        e->count[k] = static_cast<size_t>(shapes[k]);
    }
    FromDims(od, out_dims, out_rank);
    e->shapes_set = true;
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

int EngineRun(hidiff_trt_engine *e, const float *in0, size_t n0, const float *in1, size_t n1, float *out,
              size_t nout, char *err, size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (e == nullptr || in0 == nullptr || in1 == nullptr || out == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_run: NULL argument");
    }
    if (!e->shapes_set) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "engine_run before engine_set_shapes");
    }
    const size_t n[3] = {n0, n1, nout};
    for (int k = 0; k < 3; ++k) {
        if (n[k] != e->count[k]) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        "\"" + e->names[k] + "\" has " + Itoa(static_cast<long long>(n[k])) +
                            " values; the shapes set need " + Itoa(static_cast<long long>(e->count[k])));
        }
    }
    Entry en;
    if (!en.Current(e->rt)) {
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, en.why);
    }
    const cu::Device &dev = e->rt->dev;
    std::string why;
    if (!cu::Upload(dev, &e->buf[0], in0, n0 * sizeof(float), e->stream, &why) ||
        !cu::Upload(dev, &e->buf[1], in1, n1 * sizeof(float), e->stream, &why)) {
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, why);
    }
    if (!e->ctx->enqueueV3(reinterpret_cast<cudaStream_t>(e->stream))) {
        std::string msg = en.scope.With("enqueueV3 failed");
        cu::Sync(dev, e->stream, &why); // let queued copies finish before returning
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, msg);
    }
    if (!cu::QueueDownload(dev, &e->buf[2], nout * sizeof(float), e->stream, &why) ||
        !cu::Sync(dev, e->stream, &why)) {
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, why);
    }
    cu::FinishDownload(e->buf[2], out, nout * sizeof(float));
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

int EngineClose(hidiff_trt_engine *e, char *, size_t) {
    if (e == nullptr) {
        return HIDIFF_TRT_OK;
    }
    Entry en;
    en.Current(e->rt); // best effort: free what we can
    FreeEngine(e);
    e->rt->engines--;
    delete e;
    return HIDIFF_TRT_OK;
}

// ---------------------------------------------------------------- builder

#if NV_TENSORRT_MAJOR >= 10
// ProgressMonitor turns the builder's phases into log lines (INFO), which
// the child process writes to stderr and the daemon logs: a build takes
// minutes, and an operator should see that it moves.
class ProgressMonitor : public IProgressMonitor {
public:
    void phaseStart(char const *phase, char const *parent, int32_t steps) noexcept override {
        Say("build phase " + std::string(phase) + (parent != nullptr ? " (in " + std::string(parent) + ")" : "") +
            ": " + Itoa(steps) + " steps");
    }
    bool stepComplete(char const *phase, int32_t step) noexcept override {
        (void)phase;
        (void)step;
        return true; // never cancel
    }
    void phaseFinish(char const *phase) noexcept override { Say("build phase " + std::string(phase) + " done"); }

private:
    static void Say(const std::string &s) noexcept {
        try {
            TheLogger().log(ILogger::Severity::kINFO, s.c_str());
        } catch (...) {
        }
    }
};
#endif

#if NV_TENSORRT_MAJOR < 11
// Pinned says whether a layer is kept in FP32: by type (normalisation,
// softmax) or because it was made from one of the ONNX nodes the Go side
// named. The ONNX parser names each layer after its node, adding "_<n>"
// when one node makes several layers (ReduceL2 becomes square, sum and
// sqrt layers), and names tensors after the node's outputs.
bool Pinned(ILayer *layer, const std::set<std::string> &names) {
    LayerType t = layer->getType();
    if (t == LayerType::kSOFTMAX) {
        return true;
    }
#if NV_TENSORRT_MAJOR >= 10 || NV_TENSORRT_MINOR >= 6
    if (t == LayerType::kNORMALIZATION) {
        return true;
    }
#endif
    std::string name = layer->getName() != nullptr ? layer->getName() : "";
    if (names.count(name) != 0) {
        return true;
    }
    size_t us = name.rfind('_');
    if (us != std::string::npos && us + 1 < name.size() &&
        name.find_first_not_of("0123456789", us + 1) == std::string::npos && names.count(name.substr(0, us)) != 0) {
        return true;
    }
    for (int i = 0; i < layer->getNbOutputs(); ++i) {
        ITensor *o = layer->getOutput(i);
        if (o != nullptr && o->getName() != nullptr && names.count(o->getName()) != 0) {
            return true;
        }
    }
    return false;
}

// FloatLayer: every output is floating point. Precision constraints on
// shape arithmetic (int32/int64 outputs) would be refused by the builder.
bool FloatLayer(ILayer *layer) {
    if (layer->getNbOutputs() == 0 || layer->getType() == LayerType::kCONSTANT) {
        return false;
    }
    for (int i = 0; i < layer->getNbOutputs(); ++i) {
        ITensor *o = layer->getOutput(i);
        if (o == nullptr || o->getType() != DataType::kFLOAT) {
            return false;
        }
    }
    return true;
}
#endif // NV_TENSORRT_MAJOR < 11

// CountTyped counts, in a strongly typed network (whose tensors carry the
// types of the ONNX file from the parser on), the float layers that run in
// float16 (any half output) and those that stay float32 (every output float):
// the build result shows the islands made it into the network.
void CountTyped(INetworkDefinition *net, int32_t *fp16, int32_t *fp32) {
    *fp16 = *fp32 = 0;
    for (int i = 0; i < net->getNbLayers(); ++i) {
        ILayer *layer = net->getLayer(i);
        if (layer->getNbOutputs() == 0 || layer->getType() == LayerType::kCONSTANT) {
            continue;
        }
        bool half = false, all_float = true;
        for (int k = 0; k < layer->getNbOutputs(); ++k) {
            ITensor *o = layer->getOutput(k);
            DataType t = o != nullptr ? o->getType() : DataType::kINT32;
            half = half || t == DataType::kHALF;
            all_float = all_float && t == DataType::kFLOAT;
        }
        if (half) {
            ++*fp16;
        } else if (all_float) {
            ++*fp32;
        }
    }
}

#if NV_TENSORRT_MAJOR < 11
// The weakly typed FP16 recipe: kFP16 lets the builder pick FP16 anywhere,
// and precision constraints keep the pinned layers in FP32. TensorRT 10.12
// deprecates all of it (strongly typed networks take the precision from
// the graph instead) and 11 removed it; 8.x has nothing else. The
// deprecation warnings are silenced only around its uses.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
int PinFP32(INetworkDefinition *net, IBuilderConfig *cfg, const char *fp32_names, int32_t *pinned) {
    std::set<std::string> names;
    std::string cur;
    for (const char *p = fp32_names; p != nullptr && *p != '\0'; ++p) {
        if (*p == '\n') {
            if (!cur.empty()) {
                names.insert(cur);
            }
            cur.clear();
        } else {
            cur += *p;
        }
    }
    if (!cur.empty()) {
        names.insert(cur);
    }
    cfg->setFlag(BuilderFlag::kFP16);
    // OBEY, not PREFER: a pin the builder may ignore is no guard against
    // overflow. The build fails instead if no FP32 kernel exists.
    cfg->setFlag(BuilderFlag::kOBEY_PRECISION_CONSTRAINTS);
    *pinned = 0;
    for (int i = 0; i < net->getNbLayers(); ++i) {
        ILayer *layer = net->getLayer(i);
        if (!FloatLayer(layer) || !Pinned(layer, names)) {
            continue;
        }
        layer->setPrecision(DataType::kFLOAT);
        for (int k = 0; k < layer->getNbOutputs(); ++k) {
            layer->setOutputType(k, DataType::kFLOAT);
        }
        ++*pinned;
    }
    return HIDIFF_TRT_OK;
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif // NV_TENSORRT_MAJOR < 11

int Build(hidiff_trt_runtime *rt, const hidiff_trt_build_options *o, hidiff_trt_build_result *res, char *err,
          size_t errlen) {
    HIDIFF_GUARD_BEGIN
    if (rt == nullptr || o == nullptr || res == nullptr || o->onnx_path == nullptr || o->engine_path == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "build: NULL argument");
    }
    if (o->precision != HIDIFF_TRT_FP32 && o->precision != HIDIFF_TRT_FP16) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "build: unknown precision " + Itoa(o->precision));
    }
    if ((o->typing != HIDIFF_TRT_TYPING_WEAK && o->typing != HIDIFF_TRT_TYPING_STRONG) ||
        (o->typing & HIDIFF_TYPING_MODES) == 0) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID,
                    std::string("build: typing mode ") + Itoa(o->typing) + " is not one this shim (TensorRT " +
                        HeaderVersion() + " headers) builds: " +
                        (HIDIFF_TYPING_MODES == HIDIFF_TRT_TYPING_WEAK     ? "weakly typed only (TensorRT 8.x)"
                         : HIDIFF_TYPING_MODES == HIDIFF_TRT_TYPING_STRONG ? "strongly typed only (TensorRT 11)"
                                                                           : "weakly or strongly typed"));
    }
    const bool strong = o->typing == HIDIFF_TRT_TYPING_STRONG;
    if (o->n_inputs < 0 || o->n_inputs > 4) {
        return Fail(err, errlen, HIDIFF_TRT_E_INVALID, "build: n_inputs out of range");
    }
    std::memset(res, 0, sizeof *res);
    Libs &L = TheLibs();
    void *(*createBuilder)(void *, int32_t) = nullptr;
    void *(*createParser)(void *, void *, int) = nullptr;
    {
        // Another runtime's open may be loading libraries on its thread.
        std::lock_guard<std::mutex> lock(L.mu);
        createBuilder = L.createInferBuilder;
        createParser = L.parser_ok ? L.createNvOnnxParser : nullptr;
    }
    if (createParser == nullptr) {
        return Fail(err, errlen, HIDIFF_TRT_E_LIBRARY,
                    "build: the ONNX parser was not loaded (open the runtime with need_parser)");
    }
    Entry en;
    if (!en.Current(rt)) {
        return Fail(err, errlen, HIDIFF_TRT_E_CUDA, en.why);
    }
    Owned<IBuilder> builder(static_cast<IBuilder *>(createBuilder(&TheLogger(), NV_TENSORRT_VERSION)));
    if (!builder) {
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, en.scope.With("createInferBuilder failed"));
    }
#if NV_TENSORRT_MAJOR < 10
    // 8.x needs explicit batch requested (and is weakly typed: checked above).
    uint32_t flags = 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#elif NV_TENSORRT_MAJOR == 10
    // 10.x: explicit batch is the only mode; strong typing is asked for.
    uint32_t flags = strong ? 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kSTRONGLY_TYPED) : 0U;
#else
    // 11.x: every network is strongly typed (the flag is deprecated, ignored).
    uint32_t flags = 0;
#endif
    Owned<INetworkDefinition> net(builder->createNetworkV2(flags));
    if (!net) {
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, en.scope.With("createNetworkV2 failed"));
    }
    Owned<nvonnxparser::IParser> parser(
        static_cast<nvonnxparser::IParser *>(createParser(net.get(), &TheLogger(), NV_ONNX_PARSER_VERSION)));
    if (!parser) {
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, en.scope.With("createNvOnnxParser failed"));
    }
    if (!parser->parseFromFile(o->onnx_path, static_cast<int>(ILogger::Severity::kWARNING))) {
        std::string msg = std::string("the ONNX parser rejected ") + o->onnx_path;
        for (int i = 0; i < parser->getNbErrors() && i < 8; ++i) {
            auto const *pe = parser->getError(i);
            msg += "; node " + Itoa(pe->node()) + ": " + pe->desc();
        }
        return Fail(err, errlen, HIDIFF_TRT_E_PARSE, msg);
    }
    res->layers = net->getNbLayers();

    Owned<IBuilderConfig> cfg(builder->createBuilderConfig());
    if (!cfg) {
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, en.scope.With("createBuilderConfig failed"));
    }
    if (o->workspace_bytes > 0) {
        cfg->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, static_cast<size_t>(o->workspace_bytes));
    }
    if (strong) {
        // The graph's types decide; no builder flag may add FP16 (TensorRT
        // refuses kFP16 on a strongly typed network). TF32 off: the float32
        // islands and FP32 graphs are FP32 for a reason (below).
        CountTyped(net.get(), &res->fp16_layers, &res->fp32_layers);
        cfg->clearFlag(BuilderFlag::kTF32);
    } else if (o->precision == HIDIFF_TRT_FP16) {
#if NV_TENSORRT_MAJOR < 11
        PinFP32(net.get(), cfg.get(), o->fp32_names, &res->pinned_fp32);
#endif
    } else {
        // FP32 means FP32: TF32 (on by default from Ampere) keeps only 10
        // mantissa bits in matrix products, which the prior, whose first
        // step multiplies by ~174, does not tolerate.
        cfg->clearFlag(BuilderFlag::kTF32);
    }

    IOptimizationProfile *profile = builder->createOptimizationProfile();
    for (int i = 0; i < net->getNbInputs(); ++i) {
        ITensor *in = net->getInput(i);
        const hidiff_trt_input_profile *p = nullptr;
        for (int k = 0; k < o->n_inputs; ++k) {
            if (std::strncmp(o->inputs[k].name, in->getName(), HIDIFF_TRT_NAME_LEN) == 0) {
                p = &o->inputs[k];
            }
        }
        Dims d = in->getDimensions();
        if (p == nullptr) {
            if (Volume(d) >= 0) {
                continue; // fully fixed: no profile needed
            }
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        std::string("build: no profile given for dynamic input \"") + in->getName() + "\" " +
                            DimsText(d));
        }
        if (p->rank != d.nbDims) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        std::string("build: profile for \"") + in->getName() + "\" has rank " + Itoa(p->rank) +
                            ", the network's input " + DimsText(d));
        }
        if (!profile->setDimensions(in->getName(), OptProfileSelector::kMIN, ToDims(p->min, p->rank)) ||
            !profile->setDimensions(in->getName(), OptProfileSelector::kOPT, ToDims(p->opt, p->rank)) ||
            !profile->setDimensions(in->getName(), OptProfileSelector::kMAX, ToDims(p->max, p->rank))) {
            return Fail(err, errlen, HIDIFF_TRT_E_SHAPE,
                        en.scope.With(std::string("build: profile for \"") + in->getName() + "\" " +
                                      DimsText(p->min, p->rank) + ".." + DimsText(p->max, p->rank) + " refused"));
        }
    }
    if (cfg->addOptimizationProfile(profile) < 0) {
        return Fail(err, errlen, HIDIFF_TRT_E_SHAPE, en.scope.With("build: the optimisation profile is invalid"));
    }

    // Timing cache: kernel timings from earlier builds on this GPU and
    // TensorRT version, so a rebuild (new model, new tile) skips most of
    // the autotuning. A cache that does not load is replaced, not fatal.
    Owned<ITimingCache> cache;
    if (o->timing_cache_path != nullptr && *o->timing_cache_path != '\0') {
        std::vector<char> blob;
        bool missing = false;
        if (ReadFile(o->timing_cache_path, &blob, &missing) && !blob.empty()) {
            cache.reset(cfg->createTimingCache(blob.data(), blob.size()));
            if (cache && cfg->setTimingCache(*cache, false)) {
                res->timing_cache_loaded = 1;
            } else {
                TheLogger().log(ILogger::Severity::kWARNING,
                                (std::string("timing cache ") + o->timing_cache_path +
                                 " does not match this TensorRT/GPU; starting a new one")
                                    .c_str());
                cache.reset();
            }
        }
        if (!cache) {
            cache.reset(cfg->createTimingCache(nullptr, 0));
            if (cache) {
                cfg->setTimingCache(*cache, false);
            }
        }
    }
#if NV_TENSORRT_MAJOR >= 10
    ProgressMonitor monitor;
    cfg->setProgressMonitor(&monitor);
#endif

    Owned<IHostMemory> plan(builder->buildSerializedNetwork(*net, *cfg));
    if (!plan || plan->size() == 0) {
        return Fail(err, errlen, HIDIFF_TRT_E_TENSORRT, en.scope.With("buildSerializedNetwork failed"));
    }
    std::string why;
    if (!WriteFile(o->engine_path, plan->data(), plan->size(), &why)) {
        return Fail(err, errlen, HIDIFF_TRT_E_IO, why);
    }
    res->engine_bytes = plan->size();

    if (cache) {
        Owned<IHostMemory> blob(cfg->getTimingCache()->serialize());
        std::string tmp = std::string(o->timing_cache_path) + ".tmp";
        if (blob && WriteFile(tmp, blob->data(), blob->size(), &why) &&
            std::rename(tmp.c_str(), o->timing_cache_path) == 0) {
            res->timing_cache_saved = 1;
        } else {
            // The engine is good; a lost timing cache only slows the next build.
            TheLogger().log(ILogger::Severity::kWARNING,
                            ("timing cache not saved: " + (why.empty() ? std::string("rename failed") : why))
                                .c_str());
            std::remove(tmp.c_str());
        }
    }
    return HIDIFF_TRT_OK;
    HIDIFF_GUARD_END
}

const hidiff_trt_api kAPI = {
    HIDIFF_TRT_ABI_VERSION,
    "tensorrt",
    Open,
    DeviceInfo,
    LogRead,
    Close,
    EngineLoad,
    EngineTensorCount,
    EngineTensor,
    EngineBind,
    EngineSetShapes,
    EngineRun,
    EngineClose,
    Build,
};

} // namespace

extern "C" const hidiff_trt_api *hidiff_trt_shim_api(void) { return &kAPI; }
