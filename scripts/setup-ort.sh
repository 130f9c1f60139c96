#!/usr/bin/env bash
# Puts ONNX Runtime's C library (libonnxruntime.so.1) under
# third_party/onnxruntime/linux-<arch>/, taken from the npm tarball of
# onnxruntime-node, which ships prebuilt libraries for linux x64 and arm64.
# No install scripts run: `npm pack` only downloads the tarball.
# Idempotent: does nothing when the library is already there.
#
#   scripts/setup-ort.sh          the library for this machine
#   scripts/setup-ort.sh arm64    another architecture's (x64 | arm64; Debian
#                                 names amd64 | aarch64 also work), for
#                                 packaging and the emulated arm64 check
set -euo pipefail
version="${ORT_NPM_VERSION:-1.30.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
case "${1:-$(uname -m)}" in
  x86_64|amd64|x64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) echo "setup-ort: no ONNX Runtime build for ${1:-$(uname -m)}" >&2; exit 1 ;;
esac
dest="$root/third_party/onnxruntime/linux-$arch"
if [ -f "$dest/libonnxruntime.so.1" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "setup-ort: npm is needed to fetch onnxruntime-node@$version (apt-get install npm)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "onnxruntime-node@$version" >/dev/null)
tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" "package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"
mkdir -p "$dest"
install -m 0644 "$tmp/package/bin/napi-v6/linux/$arch/libonnxruntime.so.1" "$dest/libonnxruntime.so.1"
echo "$version" > "$dest/VERSION"
echo "setup-ort: ONNX Runtime $version for linux-$arch in ${dest#$root/}"
