// Package fakeabi is a FAKE implementation of the TensorRT shim's C ABI
// (trt/hidiff_trt.h), written in C, for tests of package trt only: it lets
// CI, which has gcc but no TensorRT and no GPU, drive the Go side of the
// cgo boundary for real. It is internal to trt/ and imported only by trt's
// tests, so no binary ever links it.
package fakeabi

/*
// -Wno-unused-parameter: cgo's generated prologue has unused parameters;
// check-headers.sh compiles this file alone with full -Wall -Wextra -Werror.
#cgo CFLAGS: -std=c11 -Wall -Wextra -Wno-unused-parameter
#cgo LDFLAGS: -lm
#include <stdlib.h>
#include "../../hidiff_trt.h"

const hidiff_trt_api *fake_hidiff_trt_api(void);
void fake_reset(void);
void fake_fail_open(int status, const char *msg);
void fake_fail_next(const char *op, int status, const char *msg);
void fake_set_device(const char *name, int integrated);
void fake_set_fp16_op(const char *op);
void fake_counters(long *runtimes, long *engines, long *calls, long *switches, long *builds);
void fake_set_version(int32_t version);
void fake_last_build(int *typing, int *precision, char *names, size_t len);
*/
import "C"

import "unsafe"

// API is the fake's function table, to put where the real shim's would go.
func API() unsafe.Pointer { return unsafe.Pointer(C.fake_hidiff_trt_api()) }

// Reset clears the injected failures and the call counters (not the live
// handle counts, which only closing changes).
func Reset() { C.fake_reset() }

// FailOpen makes every open fail with status and msg until Reset.
func FailOpen(status int, msg string) {
	cs := C.CString(msg)
	defer C.free(unsafe.Pointer(cs))
	C.fake_fail_open(C.int(status), cs)
}

// FailNext makes the next call of the named entry ("engine_run",
// "engine_load", "build", ...) fail with status and msg.
func FailNext(op string, status int, msg string) {
	co, cm := C.CString(op), C.CString(msg)
	defer C.free(unsafe.Pointer(co))
	defer C.free(unsafe.Pointer(cm))
	C.fake_fail_next(co, C.int(status), cm)
}

// SetDevice names the fake GPU and says whether it is integrated (Jetson).
func SetDevice(name string, integrated bool) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	i := 0
	if integrated {
		i = 1
	}
	C.fake_set_device(cs, C.int(i))
}

// SetFP16Op sets the op an FP16 transformer build writes into its plan:
// "transformer" (default), "nan" or "const", to exercise the output guard.
func SetFP16Op(op string) {
	cs := C.CString(op)
	defer C.free(unsafe.Pointer(cs))
	C.fake_set_fp16_op(cs)
}

// SetVersion makes the fake a TensorRT of that getInferLibVersion() number
// (8601 = 8.6.1, 100300 = 10.3.0, 110100 = 11.1.0; headers the same), with
// the typing modes a shim built against it has: weak on 8.x, both on 10.x,
// strong on 11.x. Reset goes back to 10.3.0.
func SetVersion(v int) { C.fake_set_version(C.int32_t(v)) }

// LastBuild is what the last build was asked for.
type LastBuild struct {
	Typing    int    // HIDIFF_TRT_TYPING_*: 1 weak, 2 strong
	Precision int    // HIDIFF_TRT_FP32 (0) or HIDIFF_TRT_FP16 (1)
	FP32Names string // the pins, '\n'-separated
}

// Last returns what the last build was asked for.
func Last() LastBuild {
	var typing, precision C.int
	buf := (*C.char)(C.calloc(4096, 1))
	defer C.free(unsafe.Pointer(buf))
	C.fake_last_build(&typing, &precision, buf, 4096)
	return LastBuild{Typing: int(typing), Precision: int(precision), FP32Names: C.GoString(buf)}
}

// Counters are the fake's global counts.
type Counters struct {
	Runtimes, Engines int // live handles
	Calls             int // entries called since Reset
	ThreadSwitches    int // calls on a runtime from a thread other than its first caller's
	Builds            int
}

// Read returns the counters.
func Read() Counters {
	var r, e, c, s, b C.long
	C.fake_counters(&r, &e, &c, &s, &b)
	return Counters{Runtimes: int(r), Engines: int(e), Calls: int(c), ThreadSwitches: int(s), Builds: int(b)}
}
