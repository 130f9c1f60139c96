/*
 * hidiff_trt.h: the C ABI between hidiffd's Go code and its TensorRT shim.
 *
 * Why a C ABI of our own rather than cgo straight into TensorRT's C++: cgo
 * speaks C only, TensorRT's API is C++ classes whose layout changes between
 * major versions, and the daemon must start on machines without TensorRT.
 * This header is the whole contract; it mentions no TensorRT or CUDA type,
 * so the Go side compiles everywhere, and the two implementations of it,
 * the real shim (shim/hidiff_trt.cc, build tag `tensorrt`) and a fake for
 * tests (internal/fakeabi/fake_hidiff_trt.c), can live in one test binary.
 *
 * Shape of the ABI:
 *   - Every implementation exposes one table of function pointers
 *     (hidiff_trt_api). The Go bridge calls through the table, so a binary
 *     built without TensorRT links no shim at all and a test can hand the
 *     bridge the fake's table.
 *   - Handles are opaque (hidiff_trt_runtime, hidiff_trt_engine).
 *   - Every fallible call returns an int status (HIDIFF_TRT_OK = 0) and
 *     writes a NUL-terminated, human-readable reason into the caller's
 *     buffer (err, errlen), truncated to fit. The reason carries the CUDA
 *     error name and string, or the TensorRT logger's error lines of that
 *     call. Nothing is kept in thread-local "last error" state, so the
 *     text never depends on which OS thread Go ran the call on.
 *   - No call keeps a pointer the caller passed in after it returns (the
 *     cgo pointer rules): plans, host buffers and strings are copied or
 *     used during the call only.
 *   - Threading: all calls on one runtime and its engines must come from
 *     one thread at a time; the Go side runs them on one locked OS thread.
 *     The shim makes the CUDA context current at the start of every call
 *     anyway, so a call from another thread is correct, only slower.
 */
#ifndef HIDIFF_TRT_H
#define HIDIFF_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change; the Go side refuses a table whose
 * abi_version differs from the one it was compiled with. */
#define HIDIFF_TRT_ABI_VERSION 2

/* Status codes. */
enum {
    HIDIFF_TRT_OK = 0,
    HIDIFF_TRT_E_INVALID = 1,     /* bad argument: NULL handle, wrong size, bad option */
    HIDIFF_TRT_E_LIBRARY = 2,     /* a shared library or one of its symbols is missing */
    HIDIFF_TRT_E_VERSION = 3,     /* the loaded TensorRT does not match the headers built against */
    HIDIFF_TRT_E_NO_DEVICE = 4,   /* no CUDA device, or the ordinal does not exist */
    HIDIFF_TRT_E_CUDA = 5,        /* a CUDA driver call failed */
    HIDIFF_TRT_E_TENSORRT = 6,    /* TensorRT refused (its logger's errors are in the text) */
    HIDIFF_TRT_E_DESERIALIZE = 7, /* the plan does not deserialize (corrupt, other version/GPU) */
    HIDIFF_TRT_E_SHAPE = 8,       /* a shape outside the optimisation profile, or buffers of the wrong size */
    HIDIFF_TRT_E_NOMEM = 9,       /* host or device allocation failed */
    HIDIFF_TRT_E_PARSE = 10,      /* the ONNX parser rejected the model (build only) */
    HIDIFF_TRT_E_IO = 11,         /* reading or writing a file failed (build only) */
    HIDIFF_TRT_E_BUSY = 12        /* close of a runtime that still has engines */
};

/* Element types, our numbering (TensorRT's enum differs between versions). */
enum {
    HIDIFF_TRT_DT_OTHER = 0,
    HIDIFF_TRT_DT_FLOAT = 1,
    HIDIFF_TRT_DT_HALF = 2,
    HIDIFF_TRT_DT_INT32 = 3,
    HIDIFF_TRT_DT_INT64 = 4,
    HIDIFF_TRT_DT_INT8 = 5,
    HIDIFF_TRT_DT_BOOL = 6,
    HIDIFF_TRT_DT_BF16 = 7
};

/* Logger severities: TensorRT's ILogger::Severity values. */
enum {
    HIDIFF_TRT_LOG_INTERNAL_ERROR = 0,
    HIDIFF_TRT_LOG_ERROR = 1,
    HIDIFF_TRT_LOG_WARNING = 2,
    HIDIFF_TRT_LOG_INFO = 3,
    HIDIFF_TRT_LOG_VERBOSE = 4
};

/* Precisions for hidiff_trt_build_options.precision. */
enum {
    HIDIFF_TRT_FP32 = 0, /* everything FP32, TF32 off */
    HIDIFF_TRT_FP16 = 1  /* weakly typed: FP16 allowed, with the FP32 pins described below;
                            strongly typed: the graph's own float16 (see typing) */
};

/* Network typing modes, for hidiff_trt_build_options.typing and, as bits,
 * hidiff_trt_device_info.typing_modes.
 *   WEAK: the builder picks each layer's precision (BuilderFlag::kFP16)
 *         within precision constraints (the FP32 pins): TensorRT 8.x, and
 *         deprecated from 10.12; gone in 11.
 *   STRONG: every tensor has the type the ONNX file gives it
 *         (NetworkDefinitionCreationFlag::kSTRONGLY_TYPED in 10.x, the only
 *         mode in 11.x); FP16 comes from a float16 export with float32
 *         islands, no builder flag or pin is involved. */
enum {
    HIDIFF_TRT_TYPING_WEAK = 1,
    HIDIFF_TRT_TYPING_STRONG = 2
};

#define HIDIFF_TRT_MAX_DIMS 8
#define HIDIFF_TRT_NAME_LEN 64

typedef struct hidiff_trt_runtime hidiff_trt_runtime;
typedef struct hidiff_trt_engine hidiff_trt_engine;

typedef struct hidiff_trt_open_options {
    /* Each a ':'-separated list of dlopen names or paths, tried in order;
     * NULL or "" means the defaults: libnvinfer.so.<major built against>
     * then the other supported major (to report a mismatch by name),
     * libnvonnxparser.so.<major>, libcuda.so.1. */
    const char *nvinfer_libs;
    const char *onnxparser_libs;
    const char *cuda_libs;
    int32_t device;       /* CUDA device ordinal */
    int32_t need_parser;  /* non-zero: load the ONNX parser too (build) */
    int32_t log_severity; /* least severe TensorRT message kept (HIDIFF_TRT_LOG_*) */
    int32_t log_fd;       /* >= 0: also write each kept message to this fd as one
                             line, as it happens (the builder's progress in a
                             child process); < 0: queue only (hidiff_trt_log_read) */
} hidiff_trt_open_options;

typedef struct hidiff_trt_device_info {
    int32_t trt_version;        /* getInferLibVersion(): 8601 = 8.6.1, 100300 = 10.3.0 */
    int32_t trt_header_version; /* NV_TENSORRT_VERSION the shim was compiled with */
    int32_t cuda_driver_version;/* cuDriverGetVersion(): 12040 = 12.4 */
    int32_t cc_major, cc_minor; /* compute capability */
    int32_t integrated;         /* 1 on Jetson: the GPU shares memory with the CPU */
    int32_t can_map_host;       /* CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY */
    int32_t zero_copy;          /* 1: I/O goes through mapped pinned memory, no copies */
    int64_t total_mem;          /* bytes */
    int32_t typing_modes;       /* HIDIFF_TRT_TYPING_* bits the shim can build with */
    char gpu_name[256];
    char nvinfer_path[512];     /* the library that was loaded, as found */
    char cuda_path[512];
} hidiff_trt_device_info;

typedef struct hidiff_trt_tensor_desc {
    char name[HIDIFF_TRT_NAME_LEN];
    int32_t is_input;     /* 1 input, 0 output */
    int32_t dtype;        /* HIDIFF_TRT_DT_* */
    int32_t linear;       /* 1: plain row-major layout (required for our host copies) */
    int32_t rank;
    int64_t dims[HIDIFF_TRT_MAX_DIMS];        /* -1 = dynamic */
    /* Inputs only: optimisation profile 0. */
    int64_t profile_min[HIDIFF_TRT_MAX_DIMS];
    int64_t profile_opt[HIDIFF_TRT_MAX_DIMS];
    int64_t profile_max[HIDIFF_TRT_MAX_DIMS];
} hidiff_trt_tensor_desc;

/* The shapes one network input may take; for a fixed input all three agree. */
typedef struct hidiff_trt_input_profile {
    char name[HIDIFF_TRT_NAME_LEN];
    int32_t rank;
    int64_t min[HIDIFF_TRT_MAX_DIMS];
    int64_t opt[HIDIFF_TRT_MAX_DIMS];
    int64_t max[HIDIFF_TRT_MAX_DIMS];
} hidiff_trt_input_profile;

typedef struct hidiff_trt_build_options {
    const char *onnx_path;
    const char *engine_path;       /* the serialized plan is written here (the caller renames it) */
    const char *timing_cache_path; /* read if present, rewritten after the build; NULL: none */
    int32_t precision;             /* HIDIFF_TRT_FP32 or HIDIFF_TRT_FP16 */
    int32_t typing;                /* HIDIFF_TRT_TYPING_WEAK or _STRONG (one of typing_modes) */
    int32_t n_inputs;
    hidiff_trt_input_profile inputs[4];
    uint64_t workspace_bytes;      /* 0: TensorRT's default (the device's memory) */
    /* Weakly typed FP16 only: '\n'-separated ONNX node names and tensor
     * names whose layers are pinned to FP32 (the nodes that run in float32
     * in the float16 export, found by the Go side from that graph's types).
     * LayerNormalization and Softmax layers are pinned by layer type as well.
     * Strongly typed builds take no pins: NULL or "". */
    const char *fp32_names;
} hidiff_trt_build_options;

typedef struct hidiff_trt_build_result {
    int32_t layers;            /* in the parsed network */
    int32_t pinned_fp32;       /* weakly typed: layers given FP32 precision constraints */
    int32_t fp16_layers;       /* strongly typed: layers with a float16 output */
    int32_t fp32_layers;       /* strongly typed: float layers whose outputs are all float32 */
    int32_t timing_cache_loaded;
    int32_t timing_cache_saved;
    uint64_t engine_bytes;
} hidiff_trt_build_result;

/* The function table. Every function pointer is set. */
typedef struct hidiff_trt_api {
    int32_t abi_version; /* HIDIFF_TRT_ABI_VERSION */
    const char *impl;    /* "tensorrt" or "fake", for logs and tests */

    /* Loads the libraries, initialises CUDA (primary context of the
     * device), creates the TensorRT runtime. */
    int (*open)(const hidiff_trt_open_options *opts, hidiff_trt_runtime **out, char *err, size_t errlen);
    int (*device_info)(hidiff_trt_runtime *rt, hidiff_trt_device_info *out, char *err, size_t errlen);
    /* Pops one queued logger message: returns 1 and fills severity and buf,
     * or 0 when the queue is empty. */
    int (*log_read)(hidiff_trt_runtime *rt, int32_t *severity, char *buf, size_t len);
    /* Frees the runtime. NULL is a no-op. Refuses (HIDIFF_TRT_E_BUSY) while
     * engines of it are open: they hold its CUDA context. */
    int (*close)(hidiff_trt_runtime *rt, char *err, size_t errlen);

    /* Deserialises a plan and creates its execution context and stream. */
    int (*engine_load)(hidiff_trt_runtime *rt, const void *plan, size_t size, hidiff_trt_engine **out,
                       char *err, size_t errlen);
    int (*engine_tensor_count)(hidiff_trt_engine *e, int32_t *count, char *err, size_t errlen);
    int (*engine_tensor)(hidiff_trt_engine *e, int32_t index, hidiff_trt_tensor_desc *out, char *err, size_t errlen);
    /* Names the two inputs and the output that run() feeds and fetches. */
    int (*engine_bind)(hidiff_trt_engine *e, const char *in0, const char *in1, const char *out,
                       char *err, size_t errlen);
    /* Sets both input shapes (HIDIFF_TRT_E_SHAPE outside profile 0) and
     * reports the output shape they imply; sizes the device buffers. */
    int (*engine_set_shapes)(hidiff_trt_engine *e, const int64_t *dims0, int32_t rank0, const int64_t *dims1,
                             int32_t rank1, int64_t *out_dims, int32_t *out_rank, char *err, size_t errlen);
    /* Copies the inputs in, runs the engine on its stream, copies the
     * output out and waits. Counts are float elements and must equal the
     * shapes last set. */
    int (*engine_run)(hidiff_trt_engine *e, const float *in0, size_t n0, const float *in1, size_t n1, float *out,
                      size_t nout, char *err, size_t errlen);
    /* Frees the engine, its context, stream and buffers. NULL is a no-op. */
    int (*engine_close)(hidiff_trt_engine *e, char *err, size_t errlen);

    /* Parses an ONNX file and writes a serialized plan (slow: minutes). */
    int (*build)(hidiff_trt_runtime *rt, const hidiff_trt_build_options *opts, hidiff_trt_build_result *res,
                 char *err, size_t errlen);
} hidiff_trt_api;

/* The real shim's table (shim/hidiff_trt.cc, build tag `tensorrt`). */
const hidiff_trt_api *hidiff_trt_shim_api(void);

#ifdef __cplusplus
}
#endif

#endif /* HIDIFF_TRT_H */
