#!/usr/bin/env bash
# All of this project's GPU work in ONE call of the device tool (a lent
# H100/H200: 15 minutes a session with the machine's start, at most 10 per
# call, at most 8 files back), because each call pays for a start:
#
#   1. trt/gpu-check.sh: the TensorRT shim's CUDA layer (seconds)
#   2. scripts/gpu-train.sh run: the committed training state continued
#      (its stage), mostly steps
#   3. beside the training, which is its load: scripts/gpu-check.sh (NVML
#      readings and throttle decisions each second, hidiffd doctor)
#
# Here, before the call:
#   scripts/gpu-train.sh prepare && scripts/gpu-check.sh build && trt/gpu-check.sh --build-only
# The call: command 'scripts/device-call.sh', carry ["build/photos",
# "build/gpu-check", "build/trt-cuda-check"], timeout_s 600.
# Back: console.log, checks.tar.gz (both checks' outputs), state/ (the
# compact state, 4 files) and log.jsonl. Then: scripts/gpu-train.sh finish DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?device-call: OUT (the output folder of the device call) is not set}"

main() {
	local checks rc nvml
	checks=$(mktemp -d)
	echo "== $(date -u +%FT%TZ) trt/gpu-check.sh"
	OUT=$checks/trt trt/gpu-check.sh || echo "device-call: trt/gpu-check.sh FAILED (training goes on)"

	# Start the NVML check once the training loads
	# the GPU; it runs for NVML_SECONDS.
	(
		sleep "${NVML_DELAY:-45}"
		GPU_CHECK_LOAD=none GPU_CHECK_RESULTS=$checks/nvml HIDIFFD_GPU_CHECK_SECONDS=${NVML_SECONDS:-120} \
			scripts/gpu-check.sh >"$checks/nvml-console.txt" 2>&1
		echo "device-call: NVML check exit $?" >>"$checks/nvml-console.txt"
	) &
	nvml=$!

	echo "== $(date -u +%FT%TZ) scripts/gpu-train.sh run"
	scripts/gpu-train.sh run
	rc=$?
	echo "device-call: training exit $rc at ${SECONDS}s"
	# the NVML check may outlast a short training: give it until the deadline
	while kill -0 "$nvml" 2>/dev/null && [ "$SECONDS" -lt "${DEADLINE:-570}" ]; do sleep 1; done
	kill "$nvml" 2>/dev/null
	tail -n 30 "$checks/nvml-console.txt" 2>/dev/null
	tar -C "$checks" -czf "$OUT/checks.tar.gz" .
	rm -rf "$checks"
	echo "== $(date -u +%FT%TZ) done in ${SECONDS}s"
	find "$OUT" -type f -printf '%s\t%p\n'
	return "$rc"
}

main 2>&1 | tee "$OUT/console.log"
exit "${PIPESTATUS[0]}"
