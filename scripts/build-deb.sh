#!/usr/bin/env bash
# make deb: the Debian packages build/deb/hidiffd_<version>_<arch>.deb.
#
#   scripts/build-deb.sh [ARCH...]       ARCH: amd64, arm64 (default: both)
#   TENSORRT_INCLUDE=DIR scripts/build-deb.sh arm64
#                                        with the TensorRT backend (-tags
#                                        tensorrt), TensorRT's headers in DIR;
#                                        the version gets "+tensorrt"
#
# For each architecture: ONNX Runtime's library for it (scripts/setup-ort.sh),
# hidiffd built with cgo by that architecture's C compiler (gcc for this
# machine's, else Debian's cross compiler, e.g. aarch64-linux-gnu-gcc from
# gcc-aarch64-linux-gnu), then nfpm (pinned in tools/go.mod) packs
# packaging/nfpm.yaml. The version comes from git (scripts/deb-version.sh);
# file dates are the last commit's (SOURCE_DATE_EPOCH). DEB_MAINTAINER
# overrides the Maintainer field (default: the last commit's author).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
GO="${GO:-go}"
[ $# -gt 0 ] || set -- amd64 arm64

version="$(scripts/deb-version.sh)"
gitver="$(git describe --always --dirty)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
export DEB_MAINTAINER="${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>')}"
trt="${TENSORRT_INCLUDE:-}"
out="build/deb"
mkdir -p "$out/doc"

# Quiet cgo (the Makefile exports the same; see scripts/cgo-quiet.h), and
# the C parts fortified as Debian's hardening flags do (-O2 is in the default).
case "${CGO_CFLAGS:-}" in
  *cgo-quiet.h*) ;;
  *) export CGO_CFLAGS="$($GO env CGO_CFLAGS) -include $root/scripts/cgo-quiet.h" ;;
esac
export CGO_CFLAGS="$CGO_CFLAGS -D_FORTIFY_SOURCE=2"

# nfpm, built once from the version pinned in tools/go.mod.
nfpm="$root/build/tools/nfpm"
if [ ! -x "$nfpm" ] || [ tools/go.mod -nt "$nfpm" ] || [ tools/go.sum -nt "$nfpm" ]; then
  echo "build-deb: building nfpm ($(awk '$1=="github.com/goreleaser/nfpm/v2"{print $2}' tools/go.mod))"
  (cd tools && $GO build -o "$nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm)
fi

# changelog.gz (a native package: one entry for this build) and the man page.
{
  echo "hidiffd ($version) unstable; urgency=medium"
  echo
  echo "  * Built from git $gitver; the repository's git log has the changes."
  echo
  echo " -- $DEB_MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$out/doc/changelog.gz"
gzip -9n < packaging/hidiffd.1 > "$out/doc/hidiffd.1.gz"
touch -d "@$SOURCE_DATE_EPOCH" "$out/doc/changelog.gz" "$out/doc/hidiffd.1.gz"

host="$(dpkg --print-architecture 2>/dev/null || "$GO" env GOARCH)"
for arch in "$@"; do
  case "$arch" in
    amd64) goarch=amd64 ortarch=x64 triplet=x86_64-linux-gnu ;;
    arm64) goarch=arm64 ortarch=arm64 triplet=aarch64-linux-gnu ;;
    *) echo "build-deb: no package for architecture $arch (amd64, arm64)" >&2; exit 2 ;;
  esac
  if [ "$arch" = "$host" ]; then cc=gcc cxx=g++; else cc="$triplet-gcc" cxx="$triplet-g++"; fi
  command -v "$cc" >/dev/null || { echo "build-deb: $cc is needed for $arch (apt-get install gcc-$triplet)" >&2; exit 1; }

  scripts/setup-ort.sh "$ortarch"
  ort="third_party/onnxruntime/linux-$ortarch/libonnxruntime.so.1"

  tags=() v="$version"
  variant="This build runs the network with ONNX Runtime on the CPU; a build with TensorRT (make deb TENSORRT_INCLUDE=DIR) also runs FP16 engines on NVIDIA GPUs."
  cxxflags="${CGO_CXXFLAGS:-$($GO env CGO_CXXFLAGS)}"
  if [ -n "$trt" ]; then
    command -v "$cxx" >/dev/null || { echo "build-deb: $cxx is needed for TensorRT on $arch (apt-get install g++-$triplet)" >&2; exit 1; }
    [ -f "$trt/NvInfer.h" ] || { echo "build-deb: no NvInfer.h in TENSORRT_INCLUDE=$trt" >&2; exit 1; }
    tags=(-tags tensorrt) v="$version+tensorrt"
    cxxflags="-isystem $trt $cxxflags"
    variant="This build has the TensorRT backend (FP16 engines on NVIDIA GPUs, TensorRT and the driver loaded at run time) besides ONNX Runtime on the CPU."
  fi

  # PIE with RELRO, but not -z now: go-nvml leaves NVML's symbols undefined
  # until it dlopens libnvidia-ml, and immediate binding would refuse to start
  # the binary on every machine ("undefined symbol: nvml...").
  bin="$out/$arch/hidiffd"
  echo "build-deb: hidiffd $gitver for linux/$arch ($cc${tags:+, ${tags[*]}})"
  CGO_ENABLED=1 GOOS=linux GOARCH="$goarch" CC="$cc" CXX="$cxx" CGO_CXXFLAGS="$cxxflags" \
    "$GO" build -trimpath -buildmode=pie "${tags[@]}" \
    -ldflags "-s -w -X main.version=$gitver -extldflags=-Wl,-z,relro" \
    -o "$bin" ./cmd/hidiffd

  if [ "$arch" = "$host" ]; then "$bin" version >/dev/null; fi
  # Every Go module linked in must have its licence in the copyright file.
  missing="$("$GO" version -m "$bin" | awk '$1 == "dep" {print $2}' | while read -r m; do
    grep -qF "$m" packaging/copyright || echo "$m"; done)"
  if [ -n "$missing" ]; then
    echo "build-deb: packaging/copyright does not name these Go modules linked into hidiffd; add each with its licence:" >&2
    echo "$missing" | sed 's/^/  /' >&2
    exit 1
  fi

  # libc6 (>= the newest GLIBC_ symbol version the binary and ONNX Runtime
  # need): 2.34 when built on Debian 12; lower when built on an older system
  # (JetPack 5 has glibc 2.31).
  libc="$(readelf -V --wide "$bin" "$ort" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"

  deb="$out/hidiffd_${v}_${arch}.deb"
  rm -f "$deb"
  DEB_ARCH="$arch" DEB_VERSION="$v" DEB_BIN="$bin" DEB_ORT="$ort" DEB_DOC="$out/doc" \
    DEB_LIBC="$libc" DEB_DESCRIPTION_VARIANT="$(fold -s -w 76 <<<"$variant" | sed 's/ *$//')" \
    "$nfpm" package --config packaging/nfpm.yaml --packager deb --target "$deb" >/dev/null
  echo "build-deb: $deb ($(du -h "$deb" | cut -f1))"
done
