#!/usr/bin/env bash
# trt/check-headers-all.sh: trt/check-headers.sh for every TensorRT include
# folder under a scratch root, with each compiler, and one line per result.
#
# Usage: trt/check-headers-all.sh ROOT [CXX...]
#
#   ROOT  holds VERSION/include/ folders (NvInfer.h, NvOnnxParser.h), e.g.
#         ROOT/8.5/include ... ROOT/11.1/include, fetched from NVIDIA's
#         public headers (never into the repository)
#   CXX   compilers to use (default: g++ aarch64-linux-gnu-g++)
#
# Exit status 1 if any combination fails; each one's log is in
# $TMPDIR/check-headers-VERSION-CXX.log.
set -uo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 ROOT [CXX...]   (ROOT holds VERSION/include folders)" >&2
    exit 2
fi
root=$1
shift
compilers=("$@")
[ ${#compilers[@]} -gt 0 ] || compilers=(g++ aarch64-linux-gnu-g++)
here=$(cd "$(dirname "$0")" && pwd)
status=0
for inc in $(ls -d "$root"/*/include | sort -V); do
    v=$(basename "$(dirname "$inc")")
    for cxx in "${compilers[@]}"; do
        log=${TMPDIR:-/tmp}/check-headers-$v-$cxx.log
        if "$here/check-headers.sh" "$inc" "$cxx" >"$log" 2>&1; then
            echo "PASS  $v  $cxx  $(tail -n 1 "$log" | sed 's/^check-headers: PASS //')"
        else
            echo "FAIL  $v  $cxx  (see $log)"
            status=1
        fi
    done
done
exit $status
