#!/usr/bin/env bash
# trt/gpu-check.sh: check the TensorRT shim's CUDA layer (trt/shim/cuda_driver.cc)
# on a machine with an NVIDIA GPU and driver. TensorRT is NOT needed: this
# tests what can be tested without it, with the shim's own code: dlopen of
# libcuda.so.1, the device's primary context, 256-byte-aligned device
# buffers, pinned (and mapped, zero-copy) host staging, host->device->host
# copies on a stream with a comparison, stream synchronisation, the context
# made current on another OS thread (as the Go worker thread does), error
# texts for invalid calls, freeing, release of the context. A second run
# with no visible device checks the "no GPU" error text.
#
# Usage:
#   trt/gpu-check.sh                  build (needs g++ or c++) and run; results in $OUT
#   trt/gpu-check.sh --build-only     build build/trt-cuda-check here (static
#                                     libstdc++), for a GPU machine without a compiler
#   trt/gpu-check.sh --fake           run against trt/gpucheck/fake_libcuda.c (no GPU;
#                                     what check-headers.sh does)
#
# On a lent GPU machine (no network, 10 min): carry build/trt-cuda-check if
# the machine may lack a compiler; the whole run takes seconds. Results:
# $OUT/cuda-check.txt (the checks), $OUT/cuda-check-nodevice.txt, $OUT/env.txt.
# Exit status 0 when every check passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${OUT:-$root/build/gpu-check}
prebuilt=$root/build/trt-cuda-check
mode=${1:-run}

compiler() {
    for c in "${CXX:-}" g++ c++ clang++; do
        if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

build() { # build OUTPUT [extra flags]
    local cxx
    cxx=$(compiler) || { echo "gpu-check: no C++ compiler; run --build-only elsewhere and carry $prebuilt" >&2; return 1; }
    "$cxx" -std=c++17 -O2 -Wall -Wextra -Werror -pthread -o "$1" "${@:2}" \
        "$here/gpucheck/cuda_check.cc" "$here/shim/cuda_driver.cc" -ldl
}

case "$mode" in
--build-only)
    mkdir -p "$root/build"
    build "$prebuilt" -static-libstdc++ -static-libgcc && echo "built $prebuilt"
    exit $?
    ;;
--fake)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -shared -fPIC -o "$tmp/libcuda.so.1" "$here/gpucheck/fake_libcuda.c" || exit 1
    build "$tmp/cuda-check" || exit 1
    "$tmp/cuda-check" "$tmp/libcuda.so.1"
    exit $?
    ;;
run) ;;
*)
    sed -n '2,/^set /p' "$0" | sed 's/^# \{0,1\}//' | head -n -1
    exit 2
    ;;
esac

mkdir -p "$out"
bin=$out/cuda-check
if ! build "$bin" 2>"$out/build.txt"; then
    if [ -x "$prebuilt" ]; then
        echo "gpu-check: compiling failed or no compiler ($(head -c 300 "$out/build.txt")); using $prebuilt"
        cp "$prebuilt" "$bin"
    else
        cat "$out/build.txt"
        exit 1
    fi
fi

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvinfer' || echo "(ldconfig lists no libcuda/libnvinfer)"
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

status=0
echo "== CUDA layer checks (device ${GPU_CHECK_DEVICE:-0})"
timeout 300 "$bin" "${GPU_CHECK_LIBCUDA:-}" "${GPU_CHECK_DEVICE:-0}" 2>&1 | tee "$out/cuda-check.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# With no device visible the layer must fail with a clear text, not crash.
echo "== no visible device (CUDA_VISIBLE_DEVICES=)"
CUDA_VISIBLE_DEVICES= timeout 60 "$bin" "${GPU_CHECK_LIBCUDA:-}" 0 >"$out/cuda-check-nodevice.txt" 2>&1
nd=$?
cat "$out/cuda-check-nodevice.txt"
if [ $nd -eq 0 ] || ! grep -Eq 'FAIL (open|load): .*(CUDA_ERROR_NO_DEVICE|does not exist)' "$out/cuda-check-nodevice.txt"; then
    echo "FAIL no-device run: expected a clean failure naming CUDA_ERROR_NO_DEVICE or a missing device"
    status=1
else
    echo "ok   no-device run fails cleanly"
fi
echo "gpu-check: $([ $status -eq 0 ] && echo PASS || echo FAIL); results in $out"
exit $status
