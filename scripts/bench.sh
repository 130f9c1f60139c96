#!/usr/bin/env bash
# Bench (not a test): the Go daemon's one-shot path against the PyTorch
# reference on the same model and the same 1280x720 frame, in one run.
#
#   scripts/bench.sh [MODEL_DIR PRESET [WEIGHTS_DIR]]
#
# Defaults: the random-weight `s` export in build/models/s (make models) and
# the reference with the same seeded random weights. For a trained model pass
# its ONNX folder, its preset and the folder of its .pth weights.
# Prints wall time and peak RSS of each, hidiffd's stage timings (and the
# share of time outside the two network calls), and the PSNR between
# outputs: Go tiled vs Go whole-frame, Go whole-frame vs PyTorch.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
PY=${PYTHON:-/usr/bin/python3}
model=${1:-build/models/s}
preset=${2:-s}
weights=${3:-}
out=build/bench
mkdir -p "$out"
frame=$out/frame720.png
if [ ! -f "$frame" ]; then
  # A real photo, resized and cropped to 1280x720 (Urban100 img_012: edges
  # and texture, the hard case for a deblurring net).
  "$PY" -c "
import sys, pathlib
from PIL import Image
src = pathlib.Path('$root').parent / 'shared/data/photos/urban100/img_012.jpg'
im = Image.open(src).convert('RGB')
im = im.resize((1280, round(1280 * im.size[1] / im.size[0])), Image.LANCZOS)
top = (im.size[1] - 720) // 2
im.crop((0, top, 1280, top + 720)).save('$frame')
"
fi
[ -x build/hidiffd ] || make build >/dev/null
# timed LOG CMD...: runs CMD with stdout+stderr to LOG; sets secs and mib.
timed() {
  local log=$1; shift
  /usr/bin/time -f "%e %M" -o "$out/time.txt" "$@" > "$log" 2>&1
  read -r secs kib < "$out/time.txt"
  mib=$((kib / 1024))
}

echo "== hidiffd deblur (default tile) on $model"
timed "$out/go.log" build/hidiffd deblur --model "$model" --out "$out/go" "$frame"
go_s=$secs go_mib=$mib
grep -o '{.*}' "$out/go.log" | tail -n1 > "$out/go.json"
echo "== hidiffd deblur --tile 0 (whole frame)"
timed "$out/go-whole.log" build/hidiffd deblur --model "$model" --tile 0 --out "$out/go-whole" "$frame"
gow_s=$secs gow_mib=$mib
echo "== PyTorch reference (engine_build.infer --preset $preset)"
ref_args=(--preset "$preset")
[ -n "$weights" ] && ref_args+=(--weights "$weights")
timed "$out/torch.log" "$PY" -m engine_build.infer "${ref_args[@]}" "$frame" "$out/torch.png"
py_s=$secs py_mib=$mib

"$PY" - "$out" "$go_s" "$go_mib" "$gow_s" "$gow_mib" "$py_s" "$py_mib" <<'PYEOF'
import json, sys
import numpy as np
from PIL import Image
out, go_s, go_mib, gow_s, gow_mib, py_s, py_mib = sys.argv[1], *map(float, sys.argv[2:])
def load(p): return np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255
def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)
st = json.load(open(f"{out}/go.json"))
net = st["prior_ms"] + st["transformer_ms"]
other = st["total_ms"] - net
print(f"\n{'run':34} {'wall s':>8} {'peak MiB':>9}")
print(f"{'hidiffd deblur (tile default)':34} {go_s:8.2f} {go_mib:9.0f}")
print(f"{'hidiffd deblur --tile 0':34} {gow_s:8.2f} {gow_mib:9.0f}")
print(f"{'PyTorch reference':34} {py_s:8.2f} {py_mib:9.0f}")
print(f"\nGo / PyTorch wall time: {go_s / py_s:.3f} (acceptance: <= 0.5)")
print(f"stage ms (tiles={st['tiles']}): decode {st['decode_ms']:.0f}, prior {st['prior_ms']:.0f}, "
      f"transformer {st['transformer_ms']:.0f}, encode {st['encode_ms']:.0f}, total {st['total_ms']:.0f}")
print(f"time outside the two network calls: {other:.0f} ms = {100 * other / st['total_ms']:.1f}% of total (acceptance: <= 5%)")
g, gw, t = load(f"{out}/go/frame720.png"), load(f"{out}/go-whole/frame720.png"), load(f"{out}/torch.png")
print(f"PSNR Go tiled vs Go whole-frame: {psnr(g, gw):.2f} dB")
print(f"PSNR Go whole-frame vs PyTorch:  {psnr(gw, t):.2f} dB (max abs diff {np.abs(gw - t).max() * 255:.0f}/255)")
PYEOF
