#!/usr/bin/env bash
# Runs the daemon in the foreground on the shipped default model with a local
# spool under build/spool, for trying hidiffd out (`make run` calls this after
# setting up ONNX Runtime and building). Production runs under systemd: see
# README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${HIDIFFD_MODEL:-$root/models/default}"
if [ ! -f "$model/prior.onnx" ] || [ ! -f "$model/transformer.onnx" ]; then
  echo "run-local: no model in $model (prior.onnx, transformer.onnx)." >&2
  echo "run-local: set HIDIFFD_MODEL=DIR to a folder exported by engine_build.export." >&2
  exit 1
fi
spool="$root/build/spool"
conf="$root/build/local.toml"
mkdir -p "$root/build"
# Only the keys that differ from config.toml's defaults.
cat > "$conf" <<CONF
# Written by scripts/run-local.sh; every other key has config.toml's default.
[spool]
root = "$spool"
settle = "500ms"
[model]
dir = "$model"
[backend]
kind = "onnxruntime"
[http]
listen = "127.0.0.1:9464"
CONF
cat <<MSG
hidiffd: local daemon on the model in ${model#$root/}
  drop JPEG or PNG frames into:  ${spool#$root/}/inbox/
  deblurred frames appear in:    ${spool#$root/}/out/   (originals in done/, rejects in failed/)
  metrics and health:            http://127.0.0.1:9464/metrics  /healthz  /readyz
  configuration used:            ${conf#$root/}   (stop with Ctrl-C; SIGTERM drains)
MSG
exec "$root/build/hidiffd" run --config "$conf"
