#!/usr/bin/env bash
# GPU telemetry and throttle check for a machine with an NVIDIA GPU and its
# driver (NVML), e.g. an H100/H200 with CUDA and PyTorch. Takes about 100 s.
#
#   scripts/gpu-check.sh build   # where Go is: build the two binaries,
#                                # stripped and gzipped (6 MB, so they fit a
#                                # device call beside the training photos),
#                                # into build/gpu-check/ (hidiffd.gz, gpu.test.gz)
#   scripts/gpu-check.sh         # on the GPU machine (no Go, no network
#                                # needed): run the check
#
# It runs `hidiffd doctor` (which shows the monitor and one reading), then a
# PyTorch load on the GPU (bf16 matmuls to heat it, plus memory taken in
# steps of 10 % up to 80 % and given back), and beside it gpu.test's
# TestGPUCheck, which prints the NVML readings and the throttle policy's
# decisions once a second for HIDIFFD_GPU_CHECK_SECONDS (default 60). With
# GPU_CHECK_LOAD=none the script starts no load of its own: another job on
# the GPU (training, say) is the load. The outputs go to $OUT/gpu-check/
# when OUT is set (GPU_CHECK_RESULTS overrides), else build/gpu-check/out/.
# Exit status: the check's (0 = every NVML read worked).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=build/gpu-check
SECONDS_CHECK=${HIDIFFD_GPU_CHECK_SECONDS:-60}
PYTHON=${PYTHON:-python3}

build() {
	rm -rf "$BIN"
	mkdir -p "$BIN"
	# cgo: go-nvml calls the driver's library (dlopen'ed at run time).
	local flags=(-trimpath -ldflags=-s\ -w)
	export CGO_CFLAGS="${CGO_CFLAGS:-} -Wno-deprecated-declarations" # nvml.h marks old calls
	CGO_ENABLED=1 go build "${flags[@]}" -o "$BIN/hidiffd" ./cmd/hidiffd &&
		CGO_ENABLED=1 go test -c "${flags[@]}" -o "$BIN/gpu.test" ./gpu &&
		gzip -9 "$BIN/hidiffd" "$BIN/gpu.test"
}

if [ "${1:-}" = build ]; then
	build && ls -l "$BIN"
	exit
fi
if [ ! -f "$BIN/hidiffd.gz" ] || [ ! -f "$BIN/gpu.test.gz" ]; then
	if command -v go >/dev/null; then
		build || exit 1
	else
		echo "gpu-check: $BIN/hidiffd.gz and $BIN/gpu.test.gz missing and no Go here: run '$0 build' first" >&2
		exit 2
	fi
fi
EXE=$(mktemp -d)
trap 'rm -rf "$EXE"' EXIT
gunzip -c "$BIN/hidiffd.gz" >"$EXE/hidiffd" && gunzip -c "$BIN/gpu.test.gz" >"$EXE/gpu.test" &&
	chmod +x "$EXE/hidiffd" "$EXE/gpu.test" || exit 1

RES=${GPU_CHECK_RESULTS:-${OUT:-$BIN/out}/gpu-check}
mkdir -p "$RES"
echo "gpu-check: results in $RES"

{
	date -u
	uname -a
	nvidia-smi 2>&1 || echo "(no nvidia-smi)"
	# Cross-check for the thresholds and reasons NVML gives hidiffd.
	nvidia-smi -q -d TEMPERATURE,PERFORMANCE,POWER,MEMORY 2>&1 | head -120
} >"$RES/nvidia-smi-before.txt"

echo "== hidiffd doctor"
timeout 60 "$EXE/hidiffd" doctor 2>&1 | tee "$RES/doctor.txt"
echo "(doctor exit $?; onnxruntime/model FAIL lines are expected where those were not copied)"

# The load: another process using the GPU, as the policy should see it.
cat >"$RES/load.py" <<'PY'
import sys, time
try:
    import torch
except Exception as e:  # the check still runs, without a load
    print(f"load: no torch: {e}", flush=True); sys.exit(3)
if not torch.cuda.is_available():
    print("load: torch sees no CUDA device", flush=True); sys.exit(3)
dur = float(sys.argv[1])
dev = torch.device("cuda")
free, total = torch.cuda.mem_get_info()
step = int(total * 0.10)
a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
blocks = []
print(f"load: ready on {torch.cuda.get_device_name()} total={total>>20} MiB free={free>>20} MiB", flush=True)
t0 = time.time()
last = 0.0
while (now := time.time() - t0) < dur:
    for _ in range(10):
        c = a @ b
    torch.cuda.synchronize()
    # Take 10 % more every 4 s up to 80 % (t=4..32 s), hold, then give it
    # back 10 % every 2 s from t=40 s.
    if now < 34 and len(blocks) < 8 and now >= 4 * (len(blocks) + 1):
        try:
            blocks.append(torch.empty(step, dtype=torch.uint8, device=dev))
        except RuntimeError as e:
            print(f"load: t={now:.0f}s allocation failed: {e}", flush=True)
        print(f"load: t={now:.0f}s holding {len(blocks)*10}% ({len(blocks)*step>>20} MiB)", flush=True)
    elif now >= 40 and blocks and now - last >= 2:
        blocks.pop()
        torch.cuda.empty_cache()  # give it back to the driver, where NVML sees it
        last = now
        print(f"load: t={now:.0f}s holding {len(blocks)*10}%", flush=True)
print("load: done", flush=True)
PY
if [ "${GPU_CHECK_LOAD:-}" = none ]; then
	echo "load: none started (GPU_CHECK_LOAD=none: another job is the load)" >"$RES/load.log"
	LOAD=
else
	"$PYTHON" "$RES/load.py" "$((SECONDS_CHECK + 5))" >"$RES/load.log" 2>&1 &
	LOAD=$!
	# Let the load reach the GPU (import torch, CUDA context) before measuring.
	for _ in $(seq 1 40); do
		grep -q "load: ready\|load: no\|load: torch" "$RES/load.log" 2>/dev/null && break
		kill -0 "$LOAD" 2>/dev/null || break
		sleep 0.5
	done
fi
head -3 "$RES/load.log"

echo "== gpu check (${SECONDS_CHECK}s)"
HIDIFFD_GPU_CHECK=1 HIDIFFD_GPU_CHECK_SECONDS="$SECONDS_CHECK" HIDIFFD_GPU_CHECK_OUT="$RES/check.jsonl" \
	timeout $((SECONDS_CHECK + 60)) "$EXE/gpu.test" -test.run '^TestGPUCheck$' -test.v -test.count=1 \
	>"$RES/check.log" 2>&1
STATUS=$?
if [ -n "$LOAD" ]; then
	kill "$LOAD" 2>/dev/null
	wait "$LOAD" 2>/dev/null
fi
nvidia-smi -q -d TEMPERATURE,PERFORMANCE,POWER,MEMORY >"$RES/nvidia-smi-after.txt" 2>&1
cat "$RES/load.log"
grep -v '^{"decisions"' "$RES/check.log" | tail -25
echo "gpu-check: exit $STATUS; per-second lines in $RES/check.jsonl"
exit $STATUS
