/*
 * fake_hidiff_trt.c: a FAKE implementation of hidiff_trt.h, for tests only.
 *
 * It involves no TensorRT, no CUDA and no GPU. It exists so that CI (gcc,
 * no GPU) exercises the Go side of the cgo boundary for real: handle
 * lifetimes, status codes and error text crossing into Go errors, shape
 * checks, buffers passed by pointer, calls from Go's locked worker thread,
 * under the race detector and cgocheck. Its behaviour mirrors the real
 * shim's contract (hidiff_trt.h), not TensorRT's numerics.
 *
 * A "plan" is text:
 *
 *     HIDIFF-FAKE-PLAN 1
 *     op transformer            (prior | transformer | nan | const)
 *     typing strong             (weak | strong: how it was built; optional)
 *     in blur 4 1 3 -1 -1 min 1 3 8 8 opt 1 3 64 64 max 1 3 64 64
 *     in prior 3 1 16 256
 *     out sharp 4 1 3 -1 -1
 *
 * An input line without min/opt/max has a fixed shape. The ops compute:
 * prior: out = 0.5*in1 + mean(in0); transformer: out = in0 + mean(in1);
 * nan: transformer with a NaN in element 0; const: every element 0.25.
 * A -1 in the output's dims takes in0's dimension (sharp has blur's shape).
 *
 * The fake's TensorRT version (fake_set_version, default 10.3.0) decides
 * the typing modes it builds with, as the real shim's headers do: weakly
 * typed only for 8.x, both for 10.x, strongly typed only for 11.x. A build
 * in another mode is refused with the shim's words. A strongly typed
 * build reports float16 and float32 layer counts from its onnx file's name
 * (it reads no ONNX): "*.fp16.onnx" has 40 float16 layers and 2 float32
 * ones, any other file 42 float32 layers.
 *
 * Test knobs (fake_*) inject failures and read counters; see fakeabi.go.
 */
#define _GNU_SOURCE
#include "../../hidiff_trt.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------ knobs, counters */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    int open_status; /* non-zero: open fails with it */
    char open_msg[256];
    char fail_op[32]; /* one-shot failure of the named entry */
    int fail_status;
    char fail_msg[256];
    char gpu_name[64];
    int integrated;
    char fp16_op[16]; /* op written for FP16 transformer builds */
    int32_t version;  /* getInferLibVersion() and the header version */
    long live_runtimes, live_engines, calls, thread_switches, builds;
    /* what the last build was asked for */
    int last_typing, last_precision;
    char last_names[4096];
} g = {0, "", "", 0, "", "Fake GPU", 0, "transformer", 100300, 0, 0, 0, 0, 0, 0, 0, ""};

/* typing_modes is what a shim built against version's headers supports. */
static int typing_modes(int32_t version) {
    int major = version >= 100000 ? version / 10000 : version / 1000;
    if (major < 10) {
        return HIDIFF_TRT_TYPING_WEAK;
    }
    if (major == 10) {
        return HIDIFF_TRT_TYPING_WEAK | HIDIFF_TRT_TYPING_STRONG;
    }
    return HIDIFF_TRT_TYPING_STRONG;
}

void fake_reset(void) {
    pthread_mutex_lock(&g_mu);
    g.open_status = 0;
    g.open_msg[0] = 0;
    g.fail_op[0] = 0;
    g.fail_status = 0;
    g.fail_msg[0] = 0;
    snprintf(g.gpu_name, sizeof g.gpu_name, "%s", "Fake GPU");
    g.integrated = 0;
    snprintf(g.fp16_op, sizeof g.fp16_op, "%s", "transformer");
    g.version = 100300;
    g.calls = g.thread_switches = g.builds = 0;
    g.last_typing = g.last_precision = 0;
    g.last_names[0] = 0;
    pthread_mutex_unlock(&g_mu);
}

void fake_fail_open(int status, const char *msg) {
    pthread_mutex_lock(&g_mu);
    g.open_status = status;
    snprintf(g.open_msg, sizeof g.open_msg, "%s", msg);
    pthread_mutex_unlock(&g_mu);
}

void fake_fail_next(const char *op, int status, const char *msg) {
    pthread_mutex_lock(&g_mu);
    snprintf(g.fail_op, sizeof g.fail_op, "%s", op);
    g.fail_status = status;
    snprintf(g.fail_msg, sizeof g.fail_msg, "%s", msg);
    pthread_mutex_unlock(&g_mu);
}

void fake_set_device(const char *name, int integrated) {
    pthread_mutex_lock(&g_mu);
    snprintf(g.gpu_name, sizeof g.gpu_name, "%s", name);
    g.integrated = integrated;
    pthread_mutex_unlock(&g_mu);
}

void fake_set_fp16_op(const char *op) {
    pthread_mutex_lock(&g_mu);
    snprintf(g.fp16_op, sizeof g.fp16_op, "%s", op);
    pthread_mutex_unlock(&g_mu);
}

void fake_set_version(int32_t version) {
    pthread_mutex_lock(&g_mu);
    g.version = version;
    pthread_mutex_unlock(&g_mu);
}

void fake_last_build(int *typing, int *precision, char *names, size_t len) {
    pthread_mutex_lock(&g_mu);
    *typing = g.last_typing;
    *precision = g.last_precision;
    snprintf(names, len, "%s", g.last_names);
    pthread_mutex_unlock(&g_mu);
}

void fake_counters(long *runtimes, long *engines, long *calls, long *switches, long *builds) {
    pthread_mutex_lock(&g_mu);
    *runtimes = g.live_runtimes;
    *engines = g.live_engines;
    *calls = g.calls;
    *switches = g.thread_switches;
    *builds = g.builds;
    pthread_mutex_unlock(&g_mu);
}

/* ------------------------------------------------------------ handles */

typedef struct {
    char name[HIDIFF_TRT_NAME_LEN];
    int is_input, rank;
    int64_t dims[HIDIFF_TRT_MAX_DIMS], min[HIDIFF_TRT_MAX_DIMS], opt[HIDIFF_TRT_MAX_DIMS],
        max[HIDIFF_TRT_MAX_DIMS];
} fake_tensor;

struct hidiff_trt_runtime {
    long tid; /* thread of the first call: the Go worker's */
    int engines;
    int log_fd;
    int log_queued; /* one queued message, read by log_read */
    char log_msg[128];
};

struct hidiff_trt_engine {
    hidiff_trt_runtime *rt;
    char op[16];
    int n;
    fake_tensor t[4];
    int bind[3]; /* indexes into t */
    int bound, shapes_set;
    int64_t shape[3][HIDIFF_TRT_MAX_DIMS];
    int rank[3];
    size_t count[3];
};

static long gettid_(void) { return (long)syscall(SYS_gettid); }

static void set_err(char *err, size_t len, const char *fmt, ...) {
    if (err == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* enter counts a call, records thread switches for the runtime, and fires
 * an injected one-shot failure for op. Returns 0 or the failure status. */
static int enter(hidiff_trt_runtime *rt, const char *op, char *err, size_t errlen) {
    int st = 0;
    pthread_mutex_lock(&g_mu);
    g.calls++;
    if (rt != NULL) {
        long tid = gettid_();
        if (rt->tid == 0) {
            rt->tid = tid;
        } else if (rt->tid != tid) {
            g.thread_switches++;
        }
    }
    if (g.fail_op[0] != 0 && strcmp(g.fail_op, op) == 0) {
        st = g.fail_status;
        set_err(err, errlen, "%s", g.fail_msg);
        g.fail_op[0] = 0;
    }
    pthread_mutex_unlock(&g_mu);
    return st;
}

static void dims_text(char *buf, size_t len, const int64_t *d, int rank) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < rank && o < len; i++) {
        o += (size_t)snprintf(buf + o, len - o, i ? " %lld" : "%lld", (long long)d[i]);
    }
    if (o < len) {
        snprintf(buf + o, len - o, "]");
    }
}

/* ------------------------------------------------------------ runtime */

static int f_open(const hidiff_trt_open_options *o, hidiff_trt_runtime **out, char *err, size_t errlen) {
    if (o == NULL || out == NULL) {
        set_err(err, errlen, "open: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    *out = NULL;
    int st = enter(NULL, "open", err, errlen);
    if (st != 0) {
        return st;
    }
    pthread_mutex_lock(&g_mu);
    st = g.open_status;
    if (st != 0) {
        set_err(err, errlen, "%s", g.open_msg);
    }
    pthread_mutex_unlock(&g_mu);
    if (st != 0) {
        return st;
    }
    if (o->device != 0) {
        set_err(err, errlen, "CUDA device %d does not exist (1 device visible)", o->device);
        return HIDIFF_TRT_E_NO_DEVICE;
    }
    hidiff_trt_runtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL) {
        return HIDIFF_TRT_E_NOMEM;
    }
    rt->tid = gettid_();
    rt->log_fd = o->log_fd;
    rt->log_queued = 1;
    snprintf(rt->log_msg, sizeof rt->log_msg, "fake TensorRT runtime opened (this is not TensorRT)");
    pthread_mutex_lock(&g_mu);
    g.live_runtimes++;
    pthread_mutex_unlock(&g_mu);
    *out = rt;
    return HIDIFF_TRT_OK;
}

static int f_device_info(hidiff_trt_runtime *rt, hidiff_trt_device_info *out, char *err, size_t errlen) {
    if (rt == NULL || out == NULL) {
        set_err(err, errlen, "device_info: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(rt, "device_info", err, errlen);
    if (st != 0) {
        return st;
    }
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g_mu);
    out->trt_version = g.version;
    out->trt_header_version = g.version;
    out->typing_modes = typing_modes(g.version);
    pthread_mutex_unlock(&g_mu);
    out->cuda_driver_version = 12040;
    out->cc_major = 8;
    out->cc_minor = 7;
    pthread_mutex_lock(&g_mu);
    out->integrated = g.integrated;
    out->zero_copy = g.integrated;
    out->can_map_host = 1;
    snprintf(out->gpu_name, sizeof out->gpu_name, "%s", g.gpu_name);
    pthread_mutex_unlock(&g_mu);
    out->total_mem = (int64_t)8 << 30;
    snprintf(out->nvinfer_path, sizeof out->nvinfer_path, "fake-libnvinfer.so.%d",
             out->trt_version >= 100000 ? out->trt_version / 10000 : out->trt_version / 1000);
    snprintf(out->cuda_path, sizeof out->cuda_path, "fake-libcuda.so.1");
    return HIDIFF_TRT_OK;
}

static int f_log_read(hidiff_trt_runtime *rt, int32_t *severity, char *buf, size_t len) {
    if (rt == NULL || !rt->log_queued) {
        return 0;
    }
    rt->log_queued = 0;
    *severity = HIDIFF_TRT_LOG_WARNING;
    snprintf(buf, len, "%s", rt->log_msg);
    return 1;
}

static int f_close(hidiff_trt_runtime *rt, char *err, size_t errlen) {
    if (rt == NULL) {
        return HIDIFF_TRT_OK;
    }
    enter(rt, "close", NULL, 0);
    if (rt->engines > 0) {
        set_err(err, errlen, "close: %d engine(s) of this runtime are still open", rt->engines);
        return HIDIFF_TRT_E_BUSY;
    }
    free(rt);
    pthread_mutex_lock(&g_mu);
    g.live_runtimes--;
    pthread_mutex_unlock(&g_mu);
    return HIDIFF_TRT_OK;
}

/* ------------------------------------------------------------ engines */

/* parse_dims reads "rank d0 d1 ..." from *p. */
static int parse_dims(char **p, int *rank, int64_t *d) {
    char *end;
    long r = strtol(*p, &end, 10);
    if (end == *p || r < 0 || r > HIDIFF_TRT_MAX_DIMS) {
        return 0;
    }
    *p = end;
    *rank = (int)r;
    for (int i = 0; i < r; i++) {
        d[i] = strtoll(*p, &end, 10);
        if (end == *p) {
            return 0;
        }
        *p = end;
    }
    return 1;
}

static int parse_vec(char **p, const char *word, int rank, int64_t *d) {
    while (**p == ' ') {
        (*p)++;
    }
    size_t n = strlen(word);
    if (strncmp(*p, word, n) != 0) {
        return 0;
    }
    *p += n;
    for (int i = 0; i < rank; i++) {
        char *end;
        d[i] = strtoll(*p, &end, 10);
        if (end == *p) {
            return 0;
        }
        *p = end;
    }
    return 1;
}

static int parse_plan(hidiff_trt_engine *e, const char *plan, size_t size) {
    static const char magic[] = "HIDIFF-FAKE-PLAN 1\n";
    if (size < sizeof magic - 1 || memcmp(plan, magic, sizeof magic - 1) != 0) {
        return 0;
    }
    char *text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, plan, size);
    text[size] = 0;
    int ok = 1;
    char *save = NULL;
    for (char *line = strtok_r(text + sizeof magic - 1, "\n", &save); line != NULL && ok;
         line = strtok_r(NULL, "\n", &save)) {
        char word[8], name[HIDIFF_TRT_NAME_LEN];
        int used = 0;
        if (sscanf(line, "op %15s", e->op) == 1 || strncmp(line, "typing ", 7) == 0) {
            continue;
        }
        if (sscanf(line, "%7s %63s %n", word, name, &used) != 2 || e->n >= 4) {
            ok = 0;
            break;
        }
        fake_tensor *t = &e->t[e->n++];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->is_input = strcmp(word, "in") == 0;
        char *p = line + used;
        if (!parse_dims(&p, &t->rank, t->dims)) {
            ok = 0;
            break;
        }
        memcpy(t->min, t->dims, sizeof t->dims);
        memcpy(t->opt, t->dims, sizeof t->dims);
        memcpy(t->max, t->dims, sizeof t->dims);
        if (t->is_input && strstr(p, "min") != NULL) {
            ok = parse_vec(&p, "min", t->rank, t->min) && parse_vec(&p, "opt", t->rank, t->opt) &&
                 parse_vec(&p, "max", t->rank, t->max);
        }
    }
    free(text);
    return ok && e->op[0] != 0 && e->n >= 3;
}

static int f_engine_load(hidiff_trt_runtime *rt, const void *plan, size_t size, hidiff_trt_engine **out, char *err,
                         size_t errlen) {
    if (rt == NULL || plan == NULL || out == NULL || size == 0) {
        set_err(err, errlen, "engine_load: NULL or empty argument");
        return HIDIFF_TRT_E_INVALID;
    }
    *out = NULL;
    int st = enter(rt, "engine_load", err, errlen);
    if (st != 0) {
        return st;
    }
    hidiff_trt_engine *e = calloc(1, sizeof *e);
    if (e == NULL) {
        return HIDIFF_TRT_E_NOMEM;
    }
    if (!parse_plan(e, plan, size)) {
        free(e);
        set_err(err, errlen,
                "the engine does not deserialize (corrupt, or built by another TensorRT version or for another "
                "GPU): fake: not a fake plan");
        return HIDIFF_TRT_E_DESERIALIZE;
    }
    e->rt = rt;
    rt->engines++;
    pthread_mutex_lock(&g_mu);
    g.live_engines++;
    pthread_mutex_unlock(&g_mu);
    *out = e;
    return HIDIFF_TRT_OK;
}

static int f_engine_tensor_count(hidiff_trt_engine *e, int32_t *count, char *err, size_t errlen) {
    if (e == NULL || count == NULL) {
        set_err(err, errlen, "engine_tensor_count: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(e->rt, "engine_tensor_count", err, errlen);
    if (st != 0) {
        return st;
    }
    *count = e->n;
    return HIDIFF_TRT_OK;
}

static int f_engine_tensor(hidiff_trt_engine *e, int32_t index, hidiff_trt_tensor_desc *out, char *err,
                           size_t errlen) {
    if (e == NULL || out == NULL) {
        set_err(err, errlen, "engine_tensor: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(e->rt, "engine_tensor", err, errlen);
    if (st != 0) {
        return st;
    }
    if (index < 0 || index >= e->n) {
        set_err(err, errlen, "engine_tensor: index %d out of range", index);
        return HIDIFF_TRT_E_INVALID;
    }
    const fake_tensor *t = &e->t[index];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", t->name);
    out->is_input = t->is_input;
    out->dtype = HIDIFF_TRT_DT_FLOAT;
    out->linear = 1;
    out->rank = t->rank;
    memcpy(out->dims, t->dims, sizeof t->dims);
    if (t->is_input) {
        memcpy(out->profile_min, t->min, sizeof t->min);
        memcpy(out->profile_opt, t->opt, sizeof t->opt);
        memcpy(out->profile_max, t->max, sizeof t->max);
    }
    return HIDIFF_TRT_OK;
}

static int find(hidiff_trt_engine *e, const char *name, int input) {
    for (int i = 0; i < e->n; i++) {
        if (strcmp(e->t[i].name, name) == 0 && e->t[i].is_input == input) {
            return i;
        }
    }
    return -1;
}

static int f_engine_bind(hidiff_trt_engine *e, const char *in0, const char *in1, const char *outname, char *err,
                         size_t errlen) {
    if (e == NULL || in0 == NULL || in1 == NULL || outname == NULL) {
        set_err(err, errlen, "engine_bind: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(e->rt, "engine_bind", err, errlen);
    if (st != 0) {
        return st;
    }
    const char *names[3] = {in0, in1, outname};
    for (int k = 0; k < 3; k++) {
        int i = find(e, names[k], k < 2);
        if (i < 0) {
            set_err(err, errlen, "the engine has no %s named \"%s\"", k < 2 ? "input" : "output", names[k]);
            return HIDIFF_TRT_E_SHAPE;
        }
        e->bind[k] = i;
    }
    e->bound = 1;
    e->shapes_set = 0;
    return HIDIFF_TRT_OK;
}

static int f_engine_set_shapes(hidiff_trt_engine *e, const int64_t *dims0, int32_t rank0, const int64_t *dims1,
                               int32_t rank1, int64_t *out_dims, int32_t *out_rank, char *err, size_t errlen) {
    if (e == NULL || dims0 == NULL || dims1 == NULL || out_dims == NULL || out_rank == NULL) {
        set_err(err, errlen, "engine_set_shapes: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(e->rt, "engine_set_shapes", err, errlen);
    if (st != 0) {
        return st;
    }
    if (!e->bound) {
        set_err(err, errlen, "engine_set_shapes before engine_bind");
        return HIDIFF_TRT_E_INVALID;
    }
    e->shapes_set = 0;
    const int64_t *dims[2] = {dims0, dims1};
    const int32_t ranks[2] = {rank0, rank1};
    for (int k = 0; k < 2; k++) {
        const fake_tensor *t = &e->t[e->bind[k]];
        if (ranks[k] != t->rank) {
            set_err(err, errlen, "input \"%s\" has rank %d, the engine's is %d", t->name, ranks[k], t->rank);
            return HIDIFF_TRT_E_SHAPE;
        }
        for (int i = 0; i < t->rank; i++) {
            if (dims[k][i] < t->min[i] || dims[k][i] > t->max[i]) {
                char got[128], lo[128], hi[128];
                dims_text(got, sizeof got, dims[k], ranks[k]);
                dims_text(lo, sizeof lo, t->min, t->rank);
                dims_text(hi, sizeof hi, t->max, t->rank);
                set_err(err, errlen,
                        "input \"%s\" shape %s is outside the engine's optimisation profile %s..%s (rebuild the "
                        "engine for this tile size)",
                        t->name, got, lo, hi);
                return HIDIFF_TRT_E_SHAPE;
            }
        }
        e->rank[k] = ranks[k];
        memcpy(e->shape[k], dims[k], sizeof(int64_t) * (size_t)ranks[k]);
    }
    const fake_tensor *o = &e->t[e->bind[2]];
    e->rank[2] = o->rank;
    for (int i = 0; i < o->rank; i++) {
        e->shape[2][i] = o->dims[i] >= 0 ? o->dims[i] : (i < rank0 ? dims0[i] : 1);
    }
    for (int k = 0; k < 3; k++) {
        size_t n = 1;
        for (int i = 0; i < e->rank[k]; i++) {
            n *= (size_t)e->shape[k][i];
        }
        e->count[k] = n;
    }
    *out_rank = e->rank[2];
    memcpy(out_dims, e->shape[2], sizeof(int64_t) * (size_t)e->rank[2]);
    e->shapes_set = 1;
    return HIDIFF_TRT_OK;
}

static int f_engine_run(hidiff_trt_engine *e, const float *in0, size_t n0, const float *in1, size_t n1, float *out,
                        size_t nout, char *err, size_t errlen) {
    if (e == NULL || in0 == NULL || in1 == NULL || out == NULL) {
        set_err(err, errlen, "engine_run: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(e->rt, "engine_run", err, errlen);
    if (st != 0) {
        return st;
    }
    if (!e->shapes_set) {
        set_err(err, errlen, "engine_run before engine_set_shapes");
        return HIDIFF_TRT_E_INVALID;
    }
    const size_t n[3] = {n0, n1, nout};
    for (int k = 0; k < 3; k++) {
        if (n[k] != e->count[k]) {
            set_err(err, errlen, "\"%s\" has %zu values; the shapes set need %zu", e->t[e->bind[k]].name, n[k],
                    e->count[k]);
            return HIDIFF_TRT_E_SHAPE;
        }
    }
    double m0 = 0, m1 = 0;
    for (size_t i = 0; i < n0; i++) {
        m0 += in0[i];
    }
    for (size_t i = 0; i < n1; i++) {
        m1 += in1[i];
    }
    m0 /= (double)n0;
    m1 /= (double)n1;
    if (strcmp(e->op, "prior") == 0) {
        for (size_t i = 0; i < nout; i++) {
            out[i] = 0.5f * in1[i % n1] + (float)m0;
        }
    } else if (strcmp(e->op, "const") == 0) {
        for (size_t i = 0; i < nout; i++) {
            out[i] = 0.25f;
        }
    } else { /* transformer, nan */
        for (size_t i = 0; i < nout; i++) {
            out[i] = in0[i % n0] + (float)m1;
        }
        if (strcmp(e->op, "nan") == 0) {
            out[0] = NAN;
        }
    }
    return HIDIFF_TRT_OK;
}

static int f_engine_close(hidiff_trt_engine *e, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    if (e == NULL) {
        return HIDIFF_TRT_OK;
    }
    enter(e->rt, "engine_close", NULL, 0);
    e->rt->engines--;
    free(e);
    pthread_mutex_lock(&g_mu);
    g.live_engines--;
    pthread_mutex_unlock(&g_mu);
    return HIDIFF_TRT_OK;
}

/* ------------------------------------------------------------ build */

static void write_dims(FILE *f, const int64_t *d, int rank) {
    for (int i = 0; i < rank; i++) {
        fprintf(f, " %lld", (long long)d[i]);
    }
}

static int f_build(hidiff_trt_runtime *rt, const hidiff_trt_build_options *o, hidiff_trt_build_result *res,
                   char *err, size_t errlen) {
    if (rt == NULL || o == NULL || res == NULL || o->onnx_path == NULL || o->engine_path == NULL) {
        set_err(err, errlen, "build: NULL argument");
        return HIDIFF_TRT_E_INVALID;
    }
    int st = enter(rt, "build", err, errlen);
    if (st != 0) {
        return st;
    }
    memset(res, 0, sizeof *res);
    pthread_mutex_lock(&g_mu);
    int modes = typing_modes(g.version);
    g.last_typing = o->typing;
    g.last_precision = o->precision;
    snprintf(g.last_names, sizeof g.last_names, "%s", o->fp32_names != NULL ? o->fp32_names : "");
    pthread_mutex_unlock(&g_mu);
    if ((o->typing != HIDIFF_TRT_TYPING_WEAK && o->typing != HIDIFF_TRT_TYPING_STRONG) || (o->typing & modes) == 0) {
        set_err(err, errlen, "build: typing mode %d is not one this shim (fake TensorRT) builds: %s", o->typing,
                modes == HIDIFF_TRT_TYPING_WEAK     ? "weakly typed only (TensorRT 8.x)"
                : modes == HIDIFF_TRT_TYPING_STRONG ? "strongly typed only (TensorRT 11)"
                                                    : "weakly or strongly typed");
        return HIDIFF_TRT_E_INVALID;
    }
    const int strong = o->typing == HIDIFF_TRT_TYPING_STRONG;
    if (rt->log_fd >= 0) {
        char line[512];
        int n = snprintf(line, sizeof line, "tensorrt: [I] fake build of %s\n", o->onnx_path);
        if (n > 0 && write(rt->log_fd, line, (size_t)n) < 0) {
            /* progress only */
        }
    }
    FILE *in = fopen(o->onnx_path, "rb");
    if (in == NULL) {
        set_err(err, errlen, "the ONNX parser rejected %s; node -1: %s", o->onnx_path, strerror(errno));
        return HIDIFF_TRT_E_PARSE;
    }
    fclose(in);
    int transformer = 0;
    const hidiff_trt_input_profile *img = NULL, *other = NULL;
    for (int i = 0; i < o->n_inputs; i++) {
        if (strcmp(o->inputs[i].name, "prior") == 0) {
            transformer = 1;
        }
        if (strcmp(o->inputs[i].name, "blur") == 0) {
            img = &o->inputs[i];
        } else {
            other = &o->inputs[i];
        }
    }
    if (img == NULL || other == NULL) {
        set_err(err, errlen, "build: no profile given for dynamic input \"blur\"");
        return HIDIFF_TRT_E_SHAPE;
    }
    FILE *f = fopen(o->engine_path, "wb");
    if (f == NULL) {
        set_err(err, errlen, "creating %s: %s", o->engine_path, strerror(errno));
        return HIDIFF_TRT_E_IO;
    }
    const char *op = transformer ? "transformer" : "prior";
    pthread_mutex_lock(&g_mu);
    char fp16op[16];
    snprintf(fp16op, sizeof fp16op, "%s", g.fp16_op);
    g.builds++;
    pthread_mutex_unlock(&g_mu);
    if (transformer && o->precision == HIDIFF_TRT_FP16) {
        op = fp16op;
    }
    fprintf(f, "HIDIFF-FAKE-PLAN 1\nop %s\ntyping %s\n", op, strong ? "strong" : "weak");
    int64_t dyn[HIDIFF_TRT_MAX_DIMS];
    for (int i = 0; i < img->rank; i++) {
        dyn[i] = img->min[i] == img->max[i] ? img->min[i] : -1;
    }
    fprintf(f, "in blur %d", img->rank);
    write_dims(f, dyn, img->rank);
    fprintf(f, " min");
    write_dims(f, img->min, img->rank);
    fprintf(f, " opt");
    write_dims(f, img->opt, img->rank);
    fprintf(f, " max");
    write_dims(f, img->max, img->rank);
    fprintf(f, "\nin %s %d", other->name, other->rank);
    write_dims(f, other->opt, other->rank);
    if (transformer) {
        fprintf(f, "\nout sharp %d", img->rank);
        write_dims(f, dyn, img->rank);
    } else {
        fprintf(f, "\nout prior %d", other->rank);
        write_dims(f, other->opt, other->rank);
    }
    fprintf(f, "\n");
    long size = ftell(f);
    if (fclose(f) != 0) {
        set_err(err, errlen, "writing %s: %s", o->engine_path, strerror(errno));
        return HIDIFF_TRT_E_IO;
    }
    res->engine_bytes = (uint64_t)size;
    res->layers = transformer ? 42 : 7;
    if (strong) {
        size_t n = strlen(o->onnx_path);
        int half = n >= 10 && strcmp(o->onnx_path + n - 10, ".fp16.onnx") == 0;
        res->fp16_layers = half ? res->layers - 2 : 0;
        res->fp32_layers = half ? 2 : res->layers;
    } else if (o->precision == HIDIFF_TRT_FP16 && o->fp32_names != NULL) {
        for (const char *p = o->fp32_names; *p; p++) {
            res->pinned_fp32 += *p == '\n';
        }
        res->pinned_fp32 += o->fp32_names[0] != 0;
    }
    if (o->timing_cache_path != NULL && o->timing_cache_path[0] != 0) {
        FILE *tc = fopen(o->timing_cache_path, "rb");
        if (tc != NULL) {
            res->timing_cache_loaded = 1;
            fclose(tc);
        }
        tc = fopen(o->timing_cache_path, "wb");
        if (tc != NULL) {
            fputs("fake timing cache\n", tc);
            res->timing_cache_saved = fclose(tc) == 0;
        }
    }
    return HIDIFF_TRT_OK;
}

static const hidiff_trt_api fake_api = {
    HIDIFF_TRT_ABI_VERSION, "fake",         f_open,          f_device_info,         f_log_read,
    f_close,                f_engine_load,  f_engine_tensor_count, f_engine_tensor, f_engine_bind,
    f_engine_set_shapes,    f_engine_run,   f_engine_close,  f_build,
};

const hidiff_trt_api *fake_hidiff_trt_api(void) { return &fake_api; }
