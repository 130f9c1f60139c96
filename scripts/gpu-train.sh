#!/usr/bin/env bash
# One prepared training call on a lent GPU (H100/H200, CUDA, PyTorch 2.x, no
# network) that CONTINUES the committed schedule: it resumes
# training/s/state (the compact state of the chain's current stage: weights,
# EMA, Adam, pixels seen, random states) and brings the same back, so the
# next session, CPU or GPU, carries on where this one stopped. The schedule
# counts training pixels, so the GPU's bigger batch and patch continue it
# (engine_build/train.py).
#
#   scripts/gpu-train.sh prepare        # here: photos into build/photos (training ones
#                                       # re-encoded as JPEG q85/80/75 and 64 validation
#                                       # ones kept if the call would exceed 64 MiB)
#   scripts/gpu-train.sh run            # there (scripts/device-call.sh runs it,
#                                       # timeout_s 600)
#   scripts/gpu-train.sh finish DIR     # here, DIR = the call's files: keep the state
#                                       # and log in training/s, export models/default
#                                       # from the EMA weights, measure with hidiffd eval
#
# What makes the call mostly steps (issue 11; the 2026-11-26 H100 call gave
# ~1.5-2 of 15 minutes of useful steps):
# - one patch size (PATCH, 256) and one batch (BATCH, 96), so kernels are
#   selected once, and that happens in WARM_STEPS (3) uncounted passes
#   before the clock of the steps starts (train.py --warm-steps). Batch 96:
#   at batch 32 the H100 ran 10.5 Mpx/s at 6.4 TFLOP/s, under 1% of its
#   bf16 peak (this 2.3 M-parameter net is launch-bound), so three times the
#   work per step costs far less than three times the time;
# - no smoke run by default (SMOKE=1 adds one; the CUDA path ran on an H100);
# - blur made ahead by WORKERS (14) processes: at batch 32 and 256 px they
#   kept up (data_wait 0.001 of step time on the H100); one core makes 2.8
#   Mpx of 256 px crops per CPU-second (measured here), so 14 supply ~40
#   Mpx/s, ~4x the H100's rate at batch 32: no GPU blur synthesis yet;
# - bf16 autocast and channels_last; torch.compile is not used: its compile
#   time (minutes for this many small ops) does not pay inside one call;
# - STEP_SECONDS (420) of steps; DEADLINE (540) is the second of the call
#   by which training must have stopped (SIGTERM: it saves and stops).
# The log's last line gives steps seconds, pixels/s and TFLOP/s; console.log
# adds the call's seconds from the script's start, so the share of the call
# that was steps is in the files that come back.
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=build/photos
STATE=${STATE:-training/s/state}
PYTHON=${PYTHON:-python3}
LIMIT=$((64 * 1048576))
# the shipped data description, with the part after its last ';' (how it was
# trained) replaced
TRAINING_NOTE='import onnx
m = onnx.load("models/default/prior.onnx")
d = {p.key: p.value for p in m.metadata_props}["training_data"]
print(d.rsplit(";", 1)[0] + "; continued on a GPU, see MODEL_CARD.md")'

tree_bytes() { git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1; }

extras_bytes() { # what device-call.sh carries besides the photos, if built
	local d total=0
	for d in build/gpu-check build/trt-cuda-check; do
		[ -e "$d" ] && total=$((total + $(du -sb "$d" | cut -f1)))
	done
	echo "$total"
}

prepare() {
	local src tree carry extras q
	src=$(/usr/bin/python3 -c 'from engine_build import data; print(data.PHOTOS)')
	[ -f "$STATE/meta.pt" ] || { echo "gpu-train: $STATE/meta.pt missing: nothing to continue" >&2; exit 2; }
	tree=$(tree_bytes)
	extras=$(extras_bytes)
	for q in orig 85 80 75; do
		rm -rf "$PHOTOS"
		mkdir -p "$(dirname "$PHOTOS")"
		cp -r "$src" "$PHOTOS"
		if [ "$q" != orig ]; then
			# A call carries the working tree plus carried paths, 64 MiB in
			# all. Training photos re-encoded as JPEG (quality 85: 21.5 MiB
			# instead of 29; the blur synthesis ends in a JPEG of quality
			# 60-95 anyway); of the validation photos, untouched, only the
			# 64 the validation crops come from stay.
			/usr/bin/python3 - "$PHOTOS" "$q" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
root, quality = Path(sys.argv[1]), int(sys.argv[2])
lines = (root / "MANIFEST.tsv").read_text().splitlines()
val = sorted(ln.split("\t")[0] for ln in lines[1:] if ln.startswith("bsds500/val/"))
keep = set(val[:64])      # validation crop i comes from photo i: 64 crops need the first 64
kept = [lines[0]]
for ln in lines[1:]:
    rel = ln.split("\t")[0]
    p = root / rel
    if rel.startswith("bsds500/val/"):
        if rel not in keep:
            p.unlink()
            continue
    else:
        Image.open(p).convert("RGB").save(p, format="JPEG", quality=quality)
    kept.append(ln)
(root / "MANIFEST.tsv").write_text("\n".join(kept) + "\n")
EOF
		fi
		carry=$(du -sb "$PHOTOS" | cut -f1)
		echo "gpu-train: tree $((tree / 1048576)) MiB + checks $((extras / 1048576)) MiB + photos ($q) $((carry / 1048576)) MiB (limit 64 MiB)"
		if [ $((tree + extras + carry)) -lt "$LIMIT" ]; then
			echo "gpu-train: now call the device tool as scripts/device-call.sh says"
			return 0
		fi
	done
	echo "gpu-train: too big for one device call" >&2
	exit 1
}

smoke() { # the resumed stage, 2 iterations on a copy of the state, in one process
	local dir
	dir=$(mktemp -d)
	$PYTHON -m engine_build.train --stage "$1" --preset s --run "$dir/run" --resume-from "$STATE" \
		--iters "$(($2 + 2))" --device "${DEVICE:-cuda}" --batch 2 --patch 64 \
		--workers 1 --val-every 0 --photos "$PHOTOS" --quiet ${PLAN_ARGS}
	echo "gpu-train: smoke run passed"
	rm -rf "$dir"
}

run() {
	: "${OUT:?gpu-train run: OUT (the output folder of the device call) is not set}"
	export PYTHONUNBUFFERED=1
	local run=$OUT/run stage iter
	if [ "${DEVICE:-cuda}" = cuda ]; then # DEVICE=cpu: a check of this script without a GPU
		$PYTHON -c 'import torch, PIL, numpy; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0), "numpy", numpy.__version__)'
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
	fi
	[ -f "$PHOTOS/MANIFEST.tsv" ] || { echo "gpu-train: $PHOTOS missing: run '$0 prepare' here and carry it" >&2; exit 2; }
	# the state's stage, iteration and plan (the schedule must be given as it was)
	read -r stage iter < <($PYTHON -c 'import sys; from pathlib import Path; from engine_build import checkpoints
m = checkpoints.load_pickle(Path(sys.argv[1]) / "meta.pt")
print(m["stage"], m["iteration"])' "$STATE")
	PLAN_ARGS=$($PYTHON -c 'import sys; from pathlib import Path; from engine_build import checkpoints, train
print(" ".join(train.plan_args(checkpoints.load_pickle(Path(sys.argv[1]) / "meta.pt")["plan"])))' "$STATE")
	[ "${SMOKE:-0}" = 0 ] || smoke "$stage" "$iter"
	local left=$((${DEADLINE:-540} - SECONDS))
	[ "$left" -gt 30 ] || { echo "gpu-train: no time left" >&2; return 1; }
	timeout -s TERM -k 60 "$left" \
		$PYTHON -m engine_build.train --stage "$stage" --preset s --run "$run" --resume-from "$STATE" \
		--seconds "${STEP_SECONDS:-420}" --device "${DEVICE:-cuda}" --batch "${BATCH:-96}" \
		--patch "${PATCH:-256}" --workers "${WORKERS:-14}" --threads 2 --channels-last \
		--warm-steps "${WARM_STEPS:-3}" --val-every "${VAL_EVERY:-2000}" --val-count 64 --val-patch 96 \
		--save-every 500 --log-every 100 --photos "$PHOTOS" --quiet ${PLAN_ARGS} || true
	# What comes back is at most 8 files of 16 MiB each: the compact state
	# (4 parts) and the log.
	$PYTHON -c 'import sys; from pathlib import Path; from engine_build import train
train.compact(Path(sys.argv[1]), Path(sys.argv[2]))' "$run/stage$stage/ckpt.pt" "$OUT/state"
	cp "$run/stage$stage/log.jsonl" "$OUT/log.jsonl"
	rm -rf "$run"
	tail -n 2 "$OUT/log.jsonl"
	echo "gpu-train: call seconds so far ${SECONDS}"
	ls -l "$OUT/state"
}

finish() { # DIR
	local dir="${1:?gpu-train finish: give the folder with the files of the device call}"
	local logs note
	[ -f "$dir/state/meta.pt" ] || { echo "gpu-train: $dir/state/meta.pt missing" >&2; exit 2; }
	export PYTHONPATH=.
	logs=training/s/gpu-$(date -u +%Y%m%d-%H%M)
	mkdir -p "$logs"
	# the device's absolute output folder, if a log line names it, as $OUT
	# (the repository names no machine's paths: internal/archtest)
	sed -E 's#"/[^"]*/run/#"$OUT/run/#g' "$dir/log.jsonl" >"$logs/log.jsonl"
	rm -rf "$STATE"
	cp -r "$dir/state" "$STATE"
	note=$(/usr/bin/python3 -c "$TRAINING_NOTE")
	rm -rf build/gpu-weights
	/usr/bin/python3 -c 'import sys; from pathlib import Path; from engine_build import train
print("weights sha256", train.save_official(Path(sys.argv[1]), Path(sys.argv[2])))' "$STATE" build/gpu-weights
	/usr/bin/python3 -m engine_build.export --preset s --weights build/gpu-weights --out models/default \
		--training-data "$note"
	[ -d build/valpairs ] || /usr/bin/python3 -m engine_build.make_pairs --out build/valpairs
	make build
	build/hidiffd eval --pairs build/valpairs --model models/default
	echo "gpu-train: log in $logs; put the numbers above into models/default/MODEL_CARD.md"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
finish) finish "${2:-}" ;;
*)
	sed -n '2,32p' "$0"
	exit 2
	;;
esac
