#!/usr/bin/env bash
# Installs the Debian packages the tests and the Python side need, if they are
# missing: make, python3-torch (1.13, CPU), python3-onnx, python3-pytest,
# python3-numpy, python3-pil, libopenblas0-openmp, npm (to fetch ONNX
# Runtime's library), and libimage-exiftool-perl (the Go tests validate the
# outputs' metadata with exiftool when it is there).
#
# Why OpenBLAS: Debian's torch calls BLAS through the libblas.so.3
# alternative, which is the netlib reference BLAS unless an optimised one is
# installed. Measured here (2 cores): a 512x512 float matmul 96 ms with the
# reference BLAS, 2.3 ms with OpenBLAS; a training step of the s preset
# (batch 4, 64 px) 1.2 s -> 0.42 s. The OpenMP build shares torch's thread pool.
# Needs root (or sudo) only when something is missing.
set -euo pipefail
pkgs=(make python3-torch python3-onnx python3-pytest python3-numpy python3-pil libopenblas0-openmp libimage-exiftool-perl)
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
