#!/usr/bin/env bash
# trt/check-headers.sh: compile the TensorRT shim against a TensorRT include
# folder, without TensorRT's libraries, CUDA or a GPU: the check that the
# shim is correct C++ for that TensorRT version, for CI and for machines
# that cannot run it.
#
# Usage: trt/check-headers.sh INCLUDE_DIR [CXX]
#
#   INCLUDE_DIR  holds NvInfer.h, NvOnnxParser.h (TensorRT's include/; the
#                public headers of releases before 10.16 lack NvOnnxParser.h:
#                take it from onnx-tensorrt's matching branch, e.g. 10.1-GA)
#   CXX          the C++ compiler, default g++; a cross compiler such as
#                aarch64-linux-gnu-g++ checks the Jetson (arm64) build
#
# It compiles, with -Wall -Wextra -Werror: shim/hidiff_trt.cc (object code,
# not just syntax), shim/cuda_driver.cc, gpucheck/cuda_check.cc; and, with
# the matching C compiler, the fake ABI and the fake libcuda. The CUDA
# runtime header TensorRT includes comes from shim/cudastub unless
# INCLUDE_DIR or CXXFLAGS provide the real one. For a native compiler it
# then runs the CUDA layer check against the fake libcuda.
#
# Never commit TensorRT's headers: fetch them into a scratch folder.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1/NvInfer.h" ]; then
    echo "usage: $0 INCLUDE_DIR [CXX]   (INCLUDE_DIR must hold NvInfer.h)" >&2
    exit 2
fi
inc=$(cd "$1" && pwd)
cxx=${2:-${CXX:-g++}}
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$inc/NvOnnxParser.h" ] || { echo "check-headers: $inc lacks NvOnnxParser.h" >&2; exit 2; }
# The C compiler of the same toolchain (aarch64-linux-gnu-g++ -> -gcc).
cc=${CC:-$(echo "$cxx" | sed -e 's/clang++$/clang/' -e 's/g++$/gcc/' -e 's/c++$/cc/')}
target=$("$cxx" -dumpmachine)
version=$(printf '#include <NvInferVersion.h>\nNV_TENSORRT_MAJOR.NV_TENSORRT_MINOR.NV_TENSORRT_PATCH\n' |
    "$cxx" -E -P -x c++ -isystem "$inc" - | tail -n 1 | tr -d ' ')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

flags=(-std=c++17 -O2 -Wall -Wextra -Werror ${CXXFLAGS:-})
echo "check-headers: TensorRT $version headers from $inc, $cxx ($target)"
"$cxx" "${flags[@]}" -fPIC -isystem "$inc" -isystem "$here/shim/cudastub" -c "$here/shim/hidiff_trt.cc" -o "$tmp/hidiff_trt.o"
"$cxx" "${flags[@]}" -fPIC -c "$here/shim/cuda_driver.cc" -o "$tmp/cuda_driver.o"
"$cxx" "${flags[@]}" -c "$here/gpucheck/cuda_check.cc" -o "$tmp/cuda_check.o"
# The shim must reference nothing of TensorRT or CUDA at link time: only
# libc/libdl/libstdc++ symbols may be undefined.
if nm -u "$tmp/hidiff_trt.o" "$tmp/cuda_driver.o" | grep -Ei ' (cu[A-Z]|create(Infer|NvOnnx)|getInferLib|_ZN8nvinfer1|_ZN12nvonnxparser)' ; then
    echo "check-headers: the shim links against TensorRT/CUDA symbols above; it must reach them through dlsym" >&2
    exit 1
fi
echo "  ok  shim/hidiff_trt.cc, shim/cuda_driver.cc, gpucheck/cuda_check.cc (no TensorRT/CUDA link-time symbols)"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -c "$here/internal/fakeabi/fake_hidiff_trt.c" -o "$tmp/fake.o"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared "$here/gpucheck/fake_libcuda.c" -o "$tmp/libcuda.so.1"
echo "  ok  internal/fakeabi/fake_hidiff_trt.c, gpucheck/fake_libcuda.c"
if [ "$target" = "$(cc -dumpmachine 2>/dev/null || true)" ]; then
    "$cxx" -pthread -o "$tmp/cuda-check" "$tmp/cuda_check.o" "$tmp/cuda_driver.o" -ldl
    if "$tmp/cuda-check" "$tmp/libcuda.so.1" >"$tmp/out.txt"; then
        echo "  ok  CUDA layer against the fake libcuda: $(tail -n 1 "$tmp/out.txt")"
    else
        cat "$tmp/out.txt"
        exit 1
    fi
fi
echo "check-headers: PASS (TensorRT $version, $target)"
