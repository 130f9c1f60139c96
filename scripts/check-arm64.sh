#!/usr/bin/env bash
# The arm64 package run for real: its hidiffd and its ONNX Runtime library,
# under qemu user emulation of a Cortex-A76 (ARMv8.2-A with dotprod and FP16,
# the feature set of Jetson Orin's Cortex-A78AE), i.e. the Jetson's CPU path.
#
#   scripts/check-arm64.sh [PHOTO]          (make check-arm64)
#
# Unpacks build/deb/hidiffd_<version>_{amd64,arm64}.deb (built first when
# missing: make deb), runs `hidiffd doctor` from the arm64 files, then
# `hidiffd deblur --tile 0` on the same 256x256 PNG crop of PHOTO (default
# bsds500/val/101085.jpg from ../shared/data/photos or $HIDIFFD_PHOTOS) with
# each package's binary, library and model, and compares the two outputs.
#
# Tolerance: the two builds run different CPU kernels (x86 AVX vs ARM NEON),
# so float sums differ in the last bits and an 8-bit output may differ by a
# level or two here and there. Passes when no pixel differs by more than
# MAX_DIFF (default 4) levels of 255 and the PSNR between the two outputs is
# at least MIN_PSNR (default 50) dB; a real fault (wrong layout, noise, model)
# lands near the input-vs-output PSNR (about 30 dB), far below.
#
# Needs qemu-user-static (or qemu-user), the arm64 C and C++ runtime in
# /usr/aarch64-linux-gnu (libc6-arm64-cross and libstdc++6-arm64-cross, which
# gcc-aarch64-linux-gnu and g++-aarch64-linux-gnu pull in), dpkg-deb, and
# /usr/bin/python3 with PIL and numpy (scripts/setup-deps.sh). Results under
# build/check-arm64/. Under qemu ONNX Runtime prints "cpuid_info warning:
# Unknown CPU vendor" (qemu reports no vendor); harmless.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
MAX_DIFF="${MAX_DIFF:-4}"
MIN_PSNR="${MIN_PSNR:-50}"
PY="${PYTHON:-/usr/bin/python3}"
photos="${HIDIFFD_PHOTOS:-$root/../shared/data/photos}"
photo="${1:-$photos/bsds500/val/101085.jpg}"
[ -f "$photo" ] || { echo "check-arm64: no photo $photo (give one, or set HIDIFFD_PHOTOS)" >&2; exit 1; }
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[ -n "$qemu" ] || { echo "check-arm64: qemu-aarch64 is needed (apt-get install qemu-user-static)" >&2; exit 1; }
sysroot=/usr/aarch64-linux-gnu
[ -f "$sysroot/lib/libstdc++.so.6" ] || { echo "check-arm64: no arm64 C++ runtime in $sysroot (apt-get install libstdc++6-arm64-cross)" >&2; exit 1; }

version="$(scripts/deb-version.sh)"
for a in amd64 arm64; do
  [ -f "build/deb/hidiffd_${version}_$a.deb" ] || scripts/build-deb.sh "$a"
done
work=build/check-arm64
rm -rf "$work"
mkdir -p "$work/in"
for a in amd64 arm64; do dpkg-deb -x "build/deb/hidiffd_${version}_$a.deb" "$work/$a"; done
machine="$(readelf -h "$work/arm64/usr/bin/hidiffd" | awk -F: '/Machine/{gsub(/^ +/,"",$2); print $2}')"
echo "check-arm64: $work/arm64/usr/bin/hidiffd is $machine; qemu: $("$qemu" --version | head -1)"
[ "$machine" = AArch64 ] || { echo "check-arm64: not an arm64 binary" >&2; exit 1; }

# hidiffd from one unpacked package, with that package's library and model.
hd() {
  local a="$1"; shift
  local r="$work/$a"
  if [ "$a" = arm64 ]; then
    HIDIFFD_ORT_LIB="$r/usr/lib/hidiffd/libonnxruntime.so.1" QEMU_LD_PREFIX="$sysroot" QEMU_CPU=cortex-a76 \
      "$qemu" "$r/usr/bin/hidiffd" "$@"
  else
    HIDIFFD_ORT_LIB="$r/usr/lib/hidiffd/libonnxruntime.so.1" "$r/usr/bin/hidiffd" "$@"
  fi
}

"$PY" - "$photo" "$work/in/photo.png" <<'PYEOF'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
w, h = im.size
s = 256
im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).save(sys.argv[2])
PYEOF

echo "check-arm64: hidiffd doctor (arm64, emulated)"
hd arm64 doctor --model "$work/arm64/usr/share/hidiffd/models/default" | tee "$work/doctor-arm64.txt"
grep -q "linux/arm64" "$work/doctor-arm64.txt"
grep -q "loads with ONNX Runtime" "$work/doctor-arm64.txt"

for a in amd64 arm64; do
  t0=$(date +%s%N)
  hd "$a" deblur --model "$work/$a/usr/share/hidiffd/models/default" --tile 0 --threads 2 \
    --out "$work/out-$a" "$work/in/photo.png" > "$work/deblur-$a.json"
  t1=$(date +%s%N)
  echo "check-arm64: deblur $a: $(( (t1 - t0) / 1000000 )) ms wall"
done

"$PY" - "$work" "$MAX_DIFF" "$MIN_PSNR" <<'PYEOF'
import sys, math
import numpy as np
from PIL import Image
work, max_diff, min_psnr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
load = lambda p: np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
x = load(f"{work}/in/photo.png")
a = load(f"{work}/out-amd64/photo.png")
b = load(f"{work}/out-arm64/photo.png")
def psnr(u, v):
    mse = float(np.mean((u.astype(np.float64) - v) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
d = np.abs(a - b)
print(f"check-arm64: arm64 vs amd64 output: max |diff| {d.max()} levels, mean {d.mean():.4f}, "
      f"pixels differing {np.count_nonzero(d.max(axis=2))}/{d.shape[0] * d.shape[1]}, PSNR {psnr(a, b):.2f} dB")
print(f"check-arm64: output vs input (what the network changed): amd64 PSNR {psnr(a, x):.2f} dB, arm64 {psnr(b, x):.2f} dB")
ok = d.max() <= max_diff and psnr(a, b) >= min_psnr
print(f"check-arm64: tolerance max |diff| <= {max_diff}, PSNR >= {min_psnr} dB: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PYEOF
