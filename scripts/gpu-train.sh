#!/usr/bin/env bash
# One prepared training call on a lent GPU (H100/H200, CUDA, PyTorch 2.x, no
# network), continuing the shipped model from the committed weights. It must
# fit one device call of at most 10 minutes, so both stages run on a time
# budget (train.py --seconds): the learning rate and patch size follow the
# clock, and each stage ends after its seconds of steps.
#
#   scripts/gpu-train.sh prepare        # here: copy the photos into build/photos
#                                       # (ignored) and check the call's size
#   scripts/gpu-train.sh run            # there (device tool, carry build/photos,
#                                       # timeout_s 600): stage 1 then stage 2
#   scripts/gpu-train.sh finish DIR     # here, DIR = the call's files: keep the
#                                       # weights in training/s, export models/default,
#                                       # measure with hidiffd eval
#
# Budget (seconds, environment): STAGE1_SECONDS (240) and STAGE2_SECONDS (180)
# of steps; start-up, photo loading, validation and saving add about a minute.
# The device tool's time is 15 minutes a session including the machine's
# start, so leave the defaults unless a run showed the overhead is smaller.
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
	echo "gpu-train: now call the device tool with command 'scripts/gpu-train.sh run', carry [\"$PHOTOS\"], timeout_s 600"
}

train_stage() { # stage seconds init
	$PYTHON -m engine_build.train --stage "$1" --preset s --run "$RUN" --seconds "$2" --init "$3" \
		--device "${DEVICE:-cuda}" --batch "${BATCH:-16}" --patch 128 192 256 --patch-fractions 0.4 0.3 0.3 \
		--lr "${LR:-1e-3}" --clip 1.0 --workers "${WORKERS:-14}" --threads 2 \
		--val-every 1000 --val-count 32 --save-every 500 --log-every 100 --photos "$PHOTOS" --quiet
}

run() {
	: "${OUT:?gpu-train run: OUT (the output folder of the device call) is not set}"
	export PYTHONUNBUFFERED=1
	RUN=$OUT/run
	if [ "${DEVICE:-cuda}" = cuda ]; then # DEVICE=cpu: a smoke test of this script without a GPU
		$PYTHON -c 'import torch, PIL, numpy; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
	fi
	[ -f "$PHOTOS/MANIFEST.tsv" ] || { echo "gpu-train: $PHOTOS missing: run '$0 prepare' here and carry it" >&2; exit 2; }
	train_stage 1 "${STAGE1_SECONDS:-240}" "$INIT"
	train_stage 2 "${STAGE2_SECONDS:-180}" "$RUN/stage1/weights.pt"
	# ckpt.pt (with Adam's moments) is only needed to resume inside this call
	rm -f "$RUN"/stage*/ckpt.pt
	ls -l "$RUN"/stage*
}

finish() { # DIR
	local dir="${1:?gpu-train finish: give the folder with the files of the device call}"
	local run=$dir/run logs note
	[ -f "$run/stage2/weights.pt" ] || { echo "gpu-train: $run/stage2/weights.pt missing" >&2; exit 2; }
	logs=training/s/gpu-$(date -u +%Y%m%d-%H%M)
	mkdir -p "$logs"
	cp "$run"/stage1/log.jsonl "$logs"/stage1.log.jsonl
	cp "$run"/stage2/log.jsonl "$logs"/stage2.log.jsonl
	cp "$run"/stage2/weights.pt training/s/weights.pt
	note=$(/usr/bin/python3 -c "$TRAINING_NOTE")
	/usr/bin/python3 -m engine_build.export --preset s --weights "$run/weights" --out models/default \
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
