package trt

/*
#include <stdlib.h>
#include "hidiff_trt.h"

// cgo cannot call through a function pointer; these trampolines do.
static int call_open(const hidiff_trt_api *a, const hidiff_trt_open_options *o, hidiff_trt_runtime **out, char *err, size_t n) {
	return a->open(o, out, err, n);
}
static int call_device_info(const hidiff_trt_api *a, hidiff_trt_runtime *rt, hidiff_trt_device_info *out, char *err, size_t n) {
	return a->device_info(rt, out, err, n);
}
static int call_log_read(const hidiff_trt_api *a, hidiff_trt_runtime *rt, int32_t *sev, char *buf, size_t n) {
	return a->log_read(rt, sev, buf, n);
}
static int call_close(const hidiff_trt_api *a, hidiff_trt_runtime *rt, char *err, size_t n) {
	return a->close(rt, err, n);
}
static int call_engine_load(const hidiff_trt_api *a, hidiff_trt_runtime *rt, const void *plan, size_t size, hidiff_trt_engine **out, char *err, size_t n) {
	return a->engine_load(rt, plan, size, out, err, n);
}
static int call_engine_tensor_count(const hidiff_trt_api *a, hidiff_trt_engine *e, int32_t *count, char *err, size_t n) {
	return a->engine_tensor_count(e, count, err, n);
}
static int call_engine_tensor(const hidiff_trt_api *a, hidiff_trt_engine *e, int32_t i, hidiff_trt_tensor_desc *out, char *err, size_t n) {
	return a->engine_tensor(e, i, out, err, n);
}
static int call_engine_bind(const hidiff_trt_api *a, hidiff_trt_engine *e, const char *in0, const char *in1, const char *out, char *err, size_t n) {
	return a->engine_bind(e, in0, in1, out, err, n);
}
static int call_engine_set_shapes(const hidiff_trt_api *a, hidiff_trt_engine *e, const int64_t *d0, int32_t r0, const int64_t *d1, int32_t r1, int64_t *od, int32_t *orank, char *err, size_t n) {
	return a->engine_set_shapes(e, d0, r0, d1, r1, od, orank, err, n);
}
static int call_engine_run(const hidiff_trt_api *a, hidiff_trt_engine *e, const float *in0, size_t n0, const float *in1, size_t n1, float *out, size_t nout, char *err, size_t n) {
	return a->engine_run(e, in0, n0, in1, n1, out, nout, err, n);
}
static int call_engine_close(const hidiff_trt_api *a, hidiff_trt_engine *e, char *err, size_t n) {
	return a->engine_close(e, err, n);
}
static int call_build(const hidiff_trt_api *a, hidiff_trt_runtime *rt, const hidiff_trt_build_options *o, hidiff_trt_build_result *res, char *err, size_t n) {
	return a->build(rt, o, res, err, n);
}
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"
)

// This file is the Go side of the C ABI in hidiff_trt.h: it turns each
// call into a Go call with Go types and errors. Everything here runs on the
// runtime's worker thread (worker.go); nothing here is safe for concurrent
// use on its own.
//
// cgo pointer rules, as this file relies on them: Go memory passed to C
// (float slices, the error buffer is C memory) holds no Go pointers, is
// used by C only during the call, and is never stored by C; option structs
// are Go-allocated C structs that hold C strings (C.CString) only. The fake
// ABI tests run under the race detector and cgocheck=1 to hold us to it.

// Handles as the rest of the package names them.
type (
	rtHandle  = *C.hidiff_trt_runtime
	engHandle = *C.hidiff_trt_engine
)

// errBufLen is the size of the per-runtime C buffer that receives error texts.
const errBufLen = 4096

// Status is an ABI status code (HIDIFF_TRT_* in hidiff_trt.h).
type Status int

// The statuses callers branch on.
const (
	StatusOK          Status = C.HIDIFF_TRT_OK
	StatusInvalid     Status = C.HIDIFF_TRT_E_INVALID
	StatusLibrary     Status = C.HIDIFF_TRT_E_LIBRARY
	StatusVersion     Status = C.HIDIFF_TRT_E_VERSION
	StatusNoDevice    Status = C.HIDIFF_TRT_E_NO_DEVICE
	StatusCUDA        Status = C.HIDIFF_TRT_E_CUDA
	StatusTensorRT    Status = C.HIDIFF_TRT_E_TENSORRT
	StatusDeserialize Status = C.HIDIFF_TRT_E_DESERIALIZE
	StatusShape       Status = C.HIDIFF_TRT_E_SHAPE
	StatusNoMem       Status = C.HIDIFF_TRT_E_NOMEM
	StatusParse       Status = C.HIDIFF_TRT_E_PARSE
	StatusIO          Status = C.HIDIFF_TRT_E_IO
	StatusBusy        Status = C.HIDIFF_TRT_E_BUSY
)

var statusNames = map[Status]string{
	StatusInvalid: "invalid argument", StatusLibrary: "library missing", StatusVersion: "version mismatch",
	StatusNoDevice: "no CUDA device", StatusCUDA: "CUDA error", StatusTensorRT: "TensorRT error",
	StatusDeserialize: "engine does not deserialize", StatusShape: "shape error", StatusNoMem: "out of memory",
	StatusParse: "ONNX parse error", StatusIO: "I/O error", StatusBusy: "busy",
}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", int(s))
}

// Error is a failed ABI call: the operation, the status and the shim's text
// (CUDA's error name and string, TensorRT's logger lines).
type Error struct {
	Op     string
	Status Status
	Msg    string
}

func (e *Error) Error() string { return "trt: " + e.Op + ": " + e.Msg }

// Is makes errors.Is(err, &Error{Status: StatusDeserialize}) match by status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Op == "" && t.Msg == "" && t.Status == e.Status
}

// StatusOf returns the status of the first *Error in err's chain, or 0.
func StatusOf(err error) Status {
	for err != nil {
		if e, ok := err.(*Error); ok {
			return e.Status
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return 0
		}
		err = u.Unwrap()
	}
	return 0
}

// cabi is one implementation's function table plus the error buffer.
type cabi struct {
	api    *C.hidiff_trt_api
	errbuf *C.char
	logbuf *C.char
}

func newCABI(p unsafe.Pointer) (*cabi, error) {
	api := (*C.hidiff_trt_api)(p)
	if api.abi_version != C.HIDIFF_TRT_ABI_VERSION {
		return nil, fmt.Errorf("trt: the %s shim speaks ABI version %d, this binary version %d",
			C.GoString(api.impl), int(api.abi_version), C.HIDIFF_TRT_ABI_VERSION)
	}
	return &cabi{api: api, errbuf: (*C.char)(C.calloc(errBufLen, 1)), logbuf: (*C.char)(C.calloc(errBufLen, 1))}, nil
}

func (a *cabi) impl() string { return C.GoString(a.api.impl) }

// free releases the error buffer; the cabi is unusable afterwards.
func (a *cabi) free() {
	if a.errbuf != nil {
		C.free(unsafe.Pointer(a.errbuf))
		C.free(unsafe.Pointer(a.logbuf))
		a.errbuf, a.logbuf = nil, nil
	}
}

// check turns a status into an error carrying the buffer's text.
func (a *cabi) check(op string, st C.int) error {
	if st == C.HIDIFF_TRT_OK {
		return nil
	}
	msg := C.GoString(a.errbuf)
	if msg == "" {
		msg = Status(st).String()
	}
	*a.errbuf = 0
	return &Error{Op: op, Status: Status(st), Msg: msg}
}

// cstrings keeps C copies of Go strings alive for one call.
type cstrings []*C.char

func (c *cstrings) add(s string) *C.char {
	if s == "" {
		return nil
	}
	p := C.CString(s)
	*c = append(*c, p)
	return p
}

func (c cstrings) free() {
	for _, p := range c {
		C.free(unsafe.Pointer(p))
	}
}

type openSpec struct {
	nvinfer, parser, cuda string
	device                int
	needParser            bool
	severity              int
	logFile               *os.File // nil: queue only
}

func (a *cabi) open(s openSpec) (*C.hidiff_trt_runtime, error) {
	var cs cstrings
	defer cs.free()
	var o C.hidiff_trt_open_options
	o.nvinfer_libs = cs.add(s.nvinfer)
	o.onnxparser_libs = cs.add(s.parser)
	o.cuda_libs = cs.add(s.cuda)
	o.device = C.int32_t(s.device)
	if s.needParser {
		o.need_parser = 1
	}
	o.log_severity = C.int32_t(s.severity)
	o.log_fd = -1
	if s.logFile != nil {
		o.log_fd = C.int32_t(s.logFile.Fd())
	}
	var rt *C.hidiff_trt_runtime
	err := a.check("open", C.call_open(a.api, &o, &rt, a.errbuf, errBufLen))
	// The shim keeps the descriptor number for later log lines: keep the
	// file (and so the descriptor) from being closed by a finaliser.
	runtime.KeepAlive(s.logFile)
	return rt, err
}

// DeviceInfo describes the GPU and libraries a runtime uses.
type DeviceInfo struct {
	TensorRT          string // library version, "10.3.0"
	TensorRTCode      int    // getInferLibVersion()
	TensorRTHeaders   string // headers the shim was compiled with, "10.3.0"
	CUDADriver        string // "12.4"
	GPU               string // "NVIDIA H100 80GB HBM3", "Orin"
	ComputeCapability string // "9.0"
	Integrated        bool   // Jetson: the GPU shares the CPU's memory
	ZeroCopy          bool   // I/O through mapped pinned memory
	TotalMemory       int64
	NvinferPath       string
	CUDAPath          string
	Impl              string // "tensorrt" or "fake"
	// TypingModes are the network typing modes the shim builds with
	// (CanWeak, CanStrong bits): weak on 8.x, both on 10.x, strong
	// on 11.x. TypingFor picks one.
	TypingModes int
}

// Bits of DeviceInfo.TypingModes (HIDIFF_TRT_TYPING_*).
const (
	CanWeak   = int(C.HIDIFF_TRT_TYPING_WEAK)
	CanStrong = int(C.HIDIFF_TRT_TYPING_STRONG)
)

// trtVersion renders getInferLibVersion's number: 8.x is
// major*1000+minor*100+patch, 10.x and later major*10000+minor*100+patch.
func trtVersion(v int) string {
	major, rest := v/1000, v%1000
	if v >= 100000 {
		major, rest = v/10000, v%10000
	}
	return fmt.Sprintf("%d.%d.%d", major, rest/100, rest%100)
}

func (a *cabi) deviceInfo(rt *C.hidiff_trt_runtime) (DeviceInfo, error) {
	var d C.hidiff_trt_device_info
	if err := a.check("device_info", C.call_device_info(a.api, rt, &d, a.errbuf, errBufLen)); err != nil {
		return DeviceInfo{}, err
	}
	cuda := int(d.cuda_driver_version)
	return DeviceInfo{
		TensorRT:          trtVersion(int(d.trt_version)),
		TensorRTCode:      int(d.trt_version),
		TensorRTHeaders:   trtVersion(int(d.trt_header_version)),
		CUDADriver:        fmt.Sprintf("%d.%d", cuda/1000, cuda%1000/10),
		GPU:               C.GoString(&d.gpu_name[0]),
		ComputeCapability: fmt.Sprintf("%d.%d", int(d.cc_major), int(d.cc_minor)),
		Integrated:        d.integrated != 0,
		ZeroCopy:          d.zero_copy != 0,
		TotalMemory:       int64(d.total_mem),
		NvinferPath:       C.GoString(&d.nvinfer_path[0]),
		CUDAPath:          C.GoString(&d.cuda_path[0]),
		Impl:              a.impl(),
		TypingModes:       int(d.typing_modes),
	}, nil
}

// logLine is one TensorRT logger message.
type logLine struct {
	severity int
	msg      string
}

// drainLog pops every queued logger message.
func (a *cabi) drainLog(rt *C.hidiff_trt_runtime, fn func(logLine)) {
	var sev C.int32_t
	for C.call_log_read(a.api, rt, &sev, a.logbuf, errBufLen) == 1 {
		fn(logLine{severity: int(sev), msg: C.GoString(a.logbuf)})
	}
}

func (a *cabi) close(rt *C.hidiff_trt_runtime) error {
	return a.check("close", C.call_close(a.api, rt, a.errbuf, errBufLen))
}

func (a *cabi) engineLoad(rt *C.hidiff_trt_runtime, plan []byte) (*C.hidiff_trt_engine, error) {
	if len(plan) == 0 {
		return nil, &Error{Op: "engine_load", Status: StatusInvalid, Msg: "empty engine file"}
	}
	var e *C.hidiff_trt_engine
	// plan is Go memory without pointers, read by the shim during the call.
	err := a.check("engine_load", C.call_engine_load(a.api, rt, unsafe.Pointer(&plan[0]), C.size_t(len(plan)), &e, a.errbuf, errBufLen))
	return e, err
}

// DType is an element type (HIDIFF_TRT_DT_*).
type DType int

// Element types.
const (
	DTOther DType = C.HIDIFF_TRT_DT_OTHER
	DTFloat DType = C.HIDIFF_TRT_DT_FLOAT
	DTHalf  DType = C.HIDIFF_TRT_DT_HALF
	DTInt32 DType = C.HIDIFF_TRT_DT_INT32
	DTInt64 DType = C.HIDIFF_TRT_DT_INT64
	DTInt8  DType = C.HIDIFF_TRT_DT_INT8
	DTBool  DType = C.HIDIFF_TRT_DT_BOOL
	DTBF16  DType = C.HIDIFF_TRT_DT_BF16
)

func (d DType) String() string {
	switch d {
	case DTFloat:
		return "float32"
	case DTHalf:
		return "float16"
	case DTInt32:
		return "int32"
	case DTInt64:
		return "int64"
	case DTInt8:
		return "int8"
	case DTBool:
		return "bool"
	case DTBF16:
		return "bfloat16"
	}
	return "other"
}

// TensorDesc is one engine I/O tensor.
type TensorDesc struct {
	Name   string
	Input  bool
	DType  DType
	Linear bool
	Dims   []int64 // -1 = dynamic
	// Inputs only: optimisation profile 0.
	ProfileMin, ProfileOpt, ProfileMax []int64
}

func (a *cabi) engineTensors(e *C.hidiff_trt_engine) ([]TensorDesc, error) {
	var n C.int32_t
	if err := a.check("engine_tensor_count", C.call_engine_tensor_count(a.api, e, &n, a.errbuf, errBufLen)); err != nil {
		return nil, err
	}
	out := make([]TensorDesc, 0, int(n))
	for i := 0; i < int(n); i++ {
		var d C.hidiff_trt_tensor_desc
		if err := a.check("engine_tensor", C.call_engine_tensor(a.api, e, C.int32_t(i), &d, a.errbuf, errBufLen)); err != nil {
			return nil, err
		}
		rank := int(d.rank)
		if rank < 0 || rank > C.HIDIFF_TRT_MAX_DIMS {
			return nil, &Error{Op: "engine_tensor", Status: StatusInvalid, Msg: fmt.Sprintf("rank %d", rank)}
		}
		dims := func(a *[C.HIDIFF_TRT_MAX_DIMS]C.int64_t) []int64 {
			s := make([]int64, rank)
			for k := range s {
				s[k] = int64(a[k])
			}
			return s
		}
		t := TensorDesc{
			Name:   C.GoString(&d.name[0]),
			Input:  d.is_input != 0,
			DType:  DType(d.dtype),
			Linear: d.linear != 0,
			Dims:   dims(&d.dims),
		}
		if t.Input {
			t.ProfileMin, t.ProfileOpt, t.ProfileMax = dims(&d.profile_min), dims(&d.profile_opt), dims(&d.profile_max)
		}
		out = append(out, t)
	}
	return out, nil
}

func (a *cabi) engineBind(e *C.hidiff_trt_engine, in0, in1, out string) error {
	var cs cstrings
	defer cs.free()
	return a.check("engine_bind", C.call_engine_bind(a.api, e, cs.add(in0), cs.add(in1), cs.add(out), a.errbuf, errBufLen))
}

func (a *cabi) engineSetShapes(e *C.hidiff_trt_engine, d0, d1 []int64) ([]int64, error) {
	if len(d0) == 0 || len(d1) == 0 || len(d0) > C.HIDIFF_TRT_MAX_DIMS || len(d1) > C.HIDIFF_TRT_MAX_DIMS {
		return nil, &Error{Op: "engine_set_shapes", Status: StatusShape, Msg: fmt.Sprintf("bad ranks %d and %d", len(d0), len(d1))}
	}
	var od [C.HIDIFF_TRT_MAX_DIMS]C.int64_t
	var orank C.int32_t
	err := a.check("engine_set_shapes", C.call_engine_set_shapes(a.api, e,
		(*C.int64_t)(unsafe.Pointer(&d0[0])), C.int32_t(len(d0)),
		(*C.int64_t)(unsafe.Pointer(&d1[0])), C.int32_t(len(d1)),
		&od[0], &orank, a.errbuf, errBufLen))
	if err != nil {
		return nil, err
	}
	if orank < 0 || orank > C.HIDIFF_TRT_MAX_DIMS {
		return nil, &Error{Op: "engine_set_shapes", Status: StatusShape, Msg: fmt.Sprintf("output rank %d", int(orank))}
	}
	out := make([]int64, int(orank))
	for i := range out {
		out[i] = int64(od[i])
	}
	return out, nil
}

// engineRun passes the Go slices' memory straight to C: the shim copies
// it into pinned staging memory during the call and keeps no reference.
func (a *cabi) engineRun(e *C.hidiff_trt_engine, in0, in1, out []float32) error {
	if len(in0) == 0 || len(in1) == 0 || len(out) == 0 {
		return &Error{Op: "engine_run", Status: StatusShape, Msg: "empty tensor"}
	}
	return a.check("engine_run", C.call_engine_run(a.api, e,
		(*C.float)(unsafe.Pointer(&in0[0])), C.size_t(len(in0)),
		(*C.float)(unsafe.Pointer(&in1[0])), C.size_t(len(in1)),
		(*C.float)(unsafe.Pointer(&out[0])), C.size_t(len(out)),
		a.errbuf, errBufLen))
}

func (a *cabi) engineClose(e *C.hidiff_trt_engine) error {
	return a.check("engine_close", C.call_engine_close(a.api, e, a.errbuf, errBufLen))
}

// InputProfile is the range of shapes one network input may take.
type InputProfile struct {
	Name          string
	Min, Opt, Max []int64
}

type buildSpec struct {
	onnx, engine, timingCache string
	fp16                      bool
	typing                    string // Weak or Strong
	inputs                    []InputProfile
	workspaceBytes            uint64
	fp32Names                 string
}

// BuildResult is what the shim reports about one engine build.
type BuildResult struct {
	Layers            int  `json:"layers"`
	PinnedFP32        int  `json:"pinned_fp32_layers,omitempty"` // weakly typed FP16
	FP16Layers        int  `json:"fp16_layers,omitempty"`        // strongly typed: layers with a float16 output
	FP32Layers        int  `json:"fp32_layers,omitempty"`        // strongly typed: float layers all float32
	TimingCacheLoaded bool `json:"timing_cache_loaded"`
	TimingCacheSaved  bool `json:"timing_cache_saved"`
	EngineBytes       int64
}

func (a *cabi) build(rt *C.hidiff_trt_runtime, s buildSpec) (BuildResult, error) {
	var cs cstrings
	defer cs.free()
	var o C.hidiff_trt_build_options
	o.onnx_path = cs.add(s.onnx)
	o.engine_path = cs.add(s.engine)
	o.timing_cache_path = cs.add(s.timingCache)
	o.precision = C.HIDIFF_TRT_FP32
	if s.fp16 {
		o.precision = C.HIDIFF_TRT_FP16
	}
	switch s.typing {
	case Weak:
		o.typing = C.HIDIFF_TRT_TYPING_WEAK
	case Strong:
		o.typing = C.HIDIFF_TRT_TYPING_STRONG
	default:
		return BuildResult{}, &Error{Op: "build", Status: StatusInvalid, Msg: fmt.Sprintf("typing %q: want %q or %q", s.typing, Weak, Strong)}
	}
	if len(s.inputs) > len(o.inputs) {
		return BuildResult{}, &Error{Op: "build", Status: StatusInvalid, Msg: fmt.Sprintf("%d input profiles, at most %d", len(s.inputs), len(o.inputs))}
	}
	o.n_inputs = C.int32_t(len(s.inputs))
	for i, in := range s.inputs {
		p := &o.inputs[i]
		if len(in.Name) >= C.HIDIFF_TRT_NAME_LEN || len(in.Min) > C.HIDIFF_TRT_MAX_DIMS ||
			len(in.Min) != len(in.Opt) || len(in.Min) != len(in.Max) {
			return BuildResult{}, &Error{Op: "build", Status: StatusInvalid, Msg: fmt.Sprintf("bad profile for input %q", in.Name)}
		}
		for k := 0; k < len(in.Name); k++ {
			p.name[k] = C.char(in.Name[k])
		}
		p.rank = C.int32_t(len(in.Min))
		for k := range in.Min {
			p.min[k], p.opt[k], p.max[k] = C.int64_t(in.Min[k]), C.int64_t(in.Opt[k]), C.int64_t(in.Max[k])
		}
	}
	o.workspace_bytes = C.uint64_t(s.workspaceBytes)
	o.fp32_names = cs.add(s.fp32Names)
	var res C.hidiff_trt_build_result
	if err := a.check("build", C.call_build(a.api, rt, &o, &res, a.errbuf, errBufLen)); err != nil {
		return BuildResult{}, err
	}
	return BuildResult{
		Layers:            int(res.layers),
		PinnedFP32:        int(res.pinned_fp32),
		FP16Layers:        int(res.fp16_layers),
		FP32Layers:        int(res.fp32_layers),
		TimingCacheLoaded: res.timing_cache_loaded != 0,
		TimingCacheSaved:  res.timing_cache_saved != 0,
		EngineBytes:       int64(res.engine_bytes),
	}, nil
}
