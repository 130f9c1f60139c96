#!/usr/bin/env bash
# One prepared training call on a lent GPU (H100/H200, CUDA, PyTorch 2.x, no
# network), continuing the shipped model from the committed weights. It must
# fit one device call of at most 10 minutes, so both stages run on a time
# budget (train.py --seconds): the learning rate and patch size follow the
# clock, and each stage ends after its seconds of steps.
#
#   scripts/gpu-train.sh prepare        # here: copy the photos into build/photos
#                                       # (ignored) and check the call's size
#   scripts/gpu-train.sh run            # there (scripts/device-call.sh runs it,
#                                       # timeout_s 600): stage 1 then stage 2
#   scripts/gpu-train.sh finish DIR     # here, DIR = the call's files: keep the
#                                       # weights in training/s, export models/default,
#                                       # measure with hidiffd eval
#
# Budget (seconds, environment): STAGE1_SECONDS (260) and STAGE2_SECONDS (220)
# of steps; a smoke run of both stages on the GPU (a few iterations, a few
# photos) comes first so that a broken CUDA path fails while there is
# device time left to fix it and call again. DEADLINE (555) is the second of
# the call by which training must have stopped: a stage still running then
# gets SIGTERM, saves and stops, and its ckpt.pt becomes weights.pt.
# BATCH (32), LR (stage one, 1e-3), LR2 (stage two, 5e-4), WORKERS (14),
# PATCHES ("128 256") with PATCH_FRACTIONS ("0.5 0.5").
#
# Measured on an H100 (2026-11-26, batch 32, bf16): 0.075-0.09 s a step at
# 128 px, 0.2 s at 256 px (stage two: 0.105 and 0.22); the blur-making
# workers keep up (data_wait 0.001). But each stage's first 100 steps take
# ~40 s (workers reading the photos, CUDA start-up) and every new patch size
# costs 15-30 s once (kernel selection for the new shapes), all inside the
# time budget: two patch sizes, not three. A call costs ~40 s of start and
# transfers, and a stage ~20 s outside its budget (start, validation, save).
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=build/photos
INIT=${INIT:-training/s/weights.pt}
PYTHON=${PYTHON:-python3}
# the shipped data description, with the part after its last ';' (how it was
# trained) replaced
TRAINING_NOTE='import onnx
m = onnx.load("models/default/prior.onnx")
d = {p.key: p.value for p in m.metadata_props}["training_data"]
print(d.rsplit(";", 1)[0] + "; continued on a GPU, see MODEL_CARD.md")'

prepare() {
	local src
	src=$(/usr/bin/python3 -c 'from engine_build import data; print(data.PHOTOS)')
	rm -rf "$PHOTOS"
	mkdir -p "$(dirname "$PHOTOS")"
	cp -r "$src" "$PHOTOS"
	# A device call carries the working tree plus carried paths, 64 MiB in all.
	local tree carry
	tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
	carry=$(du -sb "$PHOTOS" | cut -f1)
	echo "gpu-train: tree $((tree / 1048576)) MiB + photos $((carry / 1048576)) MiB (limit 64 MiB)"
	if [ $((tree + carry)) -ge $((64 * 1048576)) ]; then
		echo "gpu-train: too big for one device call" >&2
		exit 1
	fi
	echo "gpu-train: now call the device tool as scripts/device-call.sh says"
}

train_stage() { # stage seconds init lr
	local left=$((${DEADLINE:-555} - SECONDS))
	[ "$left" -gt 30 ] || { echo "gpu-train: no time left for stage $1" >&2; return 1; }
	timeout -s TERM -k 60 "$left" \
		$PYTHON -m engine_build.train --stage "$1" --preset s --run "$RUN" --seconds "$2" --init "$3" \
		--device "${DEVICE:-cuda}" --batch "${BATCH:-32}" --patch ${PATCHES:-128 256} --patch-fractions ${PATCH_FRACTIONS:-0.5 0.5} \
		--lr "$4" --clip 1.0 --workers "${WORKERS:-14}" --threads 2 \
		--val-every 1000 --val-count 32 --save-every 500 --log-every 100 --photos "$PHOTOS" --quiet || true
	# stopped by the deadline: carry on from its last checkpoint, weights only
	if [ ! -f "$RUN/stage$1/weights.pt" ] && [ -f "$RUN/stage$1/ckpt.pt" ]; then
		$PYTHON -c 'import sys; from pathlib import Path; from engine_build import train
train.strip_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]))' "$RUN/stage$1/ckpt.pt" "$RUN/stage$1/weights.pt"
	fi
	tail -n 3 "$RUN/stage$1/log.jsonl"
	[ -f "$RUN/stage$1/weights.pt" ]
}

smoke() { # both stages, 2 iterations each, on 6 photos, in one process
	local dir photos
	dir=$(mktemp -d)
	photos=$dir/photos
	mkdir -p "$photos"
	{
		head -n 1 "$PHOTOS/MANIFEST.tsv"
		grep -v '^bsds500/val/' "$PHOTOS/MANIFEST.tsv" | sed -n '2,5p'
		grep '^bsds500/val/' "$PHOTOS/MANIFEST.tsv" | head -n 2
	} >"$photos/MANIFEST.tsv"
	for d in "$PHOTOS"/*/; do ln -s "$(cd "$d" && pwd)" "$photos/$(basename "$d")"; done
	$PYTHON -c 'import sys; from engine_build import train
common = ["--preset", "s", "--run", sys.argv[1], "--iters", "2", "--device", sys.argv[3], "--batch", "2",
          "--patch", "64", "--workers", "1", "--val-every", "2", "--val-count", "2", "--val-patch", "64",
          "--photos", sys.argv[2], "--quiet"]
train.main(["--stage", "1", *common])
train.main(["--stage", "2", *common])
print("gpu-train: smoke run of both stages passed")' "$dir/run" "$photos" "${DEVICE:-cuda}"
	rm -rf "$dir"
}

run() {
	: "${OUT:?gpu-train run: OUT (the output folder of the device call) is not set}"
	export PYTHONUNBUFFERED=1
	RUN=$OUT/run
	if [ "${DEVICE:-cuda}" = cuda ]; then # DEVICE=cpu: a smoke test of this script without a GPU
		$PYTHON -c 'import torch, PIL, numpy; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0), "numpy", numpy.__version__)'
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
	fi
	[ -f "$PHOTOS/MANIFEST.tsv" ] || { echo "gpu-train: $PHOTOS missing: run '$0 prepare' here and carry it" >&2; exit 2; }
	[ "${SMOKE:-1}" = 0 ] || smoke
	train_stage 1 "${STAGE1_SECONDS:-260}" "$INIT" "${LR:-1e-3}"
	train_stage 2 "${STAGE2_SECONDS:-220}" "$RUN/stage1/weights.pt" "${LR2:-5e-4}"
	# What comes back is at most 8 files of 16 MiB: ckpt.pt (with Adam's
	# moments) only served resuming inside this call, and finish makes the
	# official folder (run/weights) again from stage2/weights.pt.
	rm -rf "$RUN"/stage*/ckpt.pt "$RUN/weights"
	ls -l "$RUN"/stage*
}

finish() { # DIR
	local dir="${1:?gpu-train finish: give the folder with the files of the device call}"
	local run=$dir/run logs note
	[ -f "$run/stage2/weights.pt" ] || { echo "gpu-train: $run/stage2/weights.pt missing" >&2; exit 2; }
	export PYTHONPATH=.
	logs=training/s/gpu-$(date -u +%Y%m%d-%H%M)
	mkdir -p "$logs"
	cp "$run"/stage1/log.jsonl "$logs"/stage1.log.jsonl
	cp "$run"/stage2/log.jsonl "$logs"/stage2.log.jsonl
	cp "$run"/stage2/weights.pt training/s/weights.pt
	note=$(/usr/bin/python3 -c "$TRAINING_NOTE")
	rm -rf build/gpu-weights
	/usr/bin/python3 -c 'import sys; from pathlib import Path; from engine_build import train
print("weights sha256", train.save_official(Path(sys.argv[1]), Path(sys.argv[2])))' "$run/stage2/weights.pt" build/gpu-weights
	/usr/bin/python3 -m engine_build.export --preset s --weights build/gpu-weights --out models/default \
		--training-data "$note"
	[ -d build/valpairs ] || /usr/bin/python3 -m engine_build.make_pairs --out build/valpairs
	make build
	build/hidiffd eval --pairs build/valpairs --model models/default
	echo "gpu-train: logs in $logs; put the numbers above into models/default/MODEL_CARD.md"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
finish) finish "${2:-}" ;;
*)
	sed -n '2,20p' "$0"
	exit 2
	;;
esac
