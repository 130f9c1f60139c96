#!/usr/bin/env bash
# Installs the Debian packages the tests and the Python side need, if they are
# missing: make, python3-torch (1.13, CPU), python3-onnx, python3-pytest,
# python3-numpy, python3-pil, and npm (to fetch ONNX Runtime's library).
# Needs root (or sudo) only when something is missing.
set -euo pipefail
pkgs=(make python3-torch python3-onnx python3-pytest python3-numpy python3-pil)
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
