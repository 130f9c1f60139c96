# hidiffd — every set-up step and test in one place. See README.md.
#
#   make run    set up, build, and run the daemon on the shipped default model
#   make test   set up, and run every Go and Python test
#
# Python is Debian's /usr/bin/python3 (python3-torch, python3-onnx,
# python3-pytest); a pyenv or venv python3 on PATH would lack them.

PYTHON ?= /usr/bin/python3
GO     ?= go
MODELS := build/models
PRESETS := s gopro realblur
ENGINE_SRC := $(wildcard engine_build/*.py engine_build/arch/*.py)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

# Quiet cgo builds: go-nvml wraps 29 NVML functions that nvml.h marks
# deprecated, and each uncached build printed ~150 lines of
# -Wdeprecated-declarations for them. scripts/cgo-quiet.h turns that one
# warning off inside go-nvml only (see the header); every other warning, ours
# included, still shows. For every go command below (build, vet, test, deb).
export CGO_CFLAGS := $(shell $(GO) env CGO_CFLAGS 2>/dev/null || echo -O2 -g) -include $(CURDIR)/scripts/cgo-quiet.h

.PHONY: all deps setup ort models build build-tensorrt test test-go test-python vet run bench fault-run shared-run deb check-arm64 test-deb clean

all: build

## Debian packages for the Python side and the tests (installs only what is missing).
deps:
	scripts/setup-deps.sh

## ONNX Runtime's C library, from the onnxruntime-node npm tarball.
ort:
	scripts/setup-ort.sh

setup: ort

## Random-weight exports of every preset with parity fixtures, for the tests
## (each with its float16 graph, transformer.fp16.onnx), and the float16
## rounding simulations of the FP16 numerics test (ort/fp16_test.go).
FP16SIM := $(MODELS)/fp16sim/default/transformer.fp16sim.onnx $(MODELS)/fp16sim/gopro/transformer.fp16sim.onnx
models: deps $(foreach p,$(PRESETS),$(MODELS)/$(p)/fixtures/manifest.json) $(MODELS)/s-decomposed-ln/fixtures/manifest.json $(FP16SIM)

$(MODELS)/fp16sim/default/transformer.fp16sim.onnx: models/default/transformer.fp16.onnx engine_build/precision.py
	$(PYTHON) -m engine_build.precision simulate models/default $(MODELS)/fp16sim/default

$(MODELS)/fp16sim/gopro/transformer.fp16sim.onnx: $(MODELS)/gopro/fixtures/manifest.json
	$(PYTHON) -m engine_build.precision simulate $(MODELS)/gopro $(MODELS)/fp16sim/gopro

## s with layer norms as elementary ops (the export for TensorRT 8.5)
$(MODELS)/s-decomposed-ln/fixtures/manifest.json: $(ENGINE_SRC)
	$(PYTHON) -m engine_build.export --preset s --layernorm decomposed --out $(MODELS)/s-decomposed-ln --fixtures

$(MODELS)/%/fixtures/manifest.json: $(ENGINE_SRC)
	$(PYTHON) -m engine_build.export --preset $* --out $(MODELS)/$* --fixtures

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o build/hidiffd ./cmd/hidiffd

## hidiffd with the TensorRT backend: TensorRT's headers from the compiler's
## default path (JetPack, NVIDIA's apt packages) or TENSORRT_INCLUDE=DIR.
build-tensorrt:
	CGO_CXXFLAGS="$(if $(TENSORRT_INCLUDE),-isystem $(TENSORRT_INCLUDE)) $$CGO_CXXFLAGS" \
		$(GO) build -tags tensorrt -ldflags "-X main.version=$(VERSION)" -o build/hidiffd ./cmd/hidiffd

## Debian packages: build/deb/hidiffd_<version>_<arch>.deb for DEB_ARCHES
## (amd64 arm64; arm64 cross-compiled with aarch64-linux-gnu-gcc); with
## TENSORRT_INCLUDE=DIR the TensorRT variant (version +tensorrt).
DEB_ARCHES ?= amd64 arm64
deb:
	GO="$(GO)" TENSORRT_INCLUDE="$(TENSORRT_INCLUDE)" scripts/build-deb.sh $(DEB_ARCHES)

## The arm64 package's binary and library run under qemu user emulation:
## doctor, and a deblur compared with the amd64 build's output.
check-arm64:
	GO="$(GO)" scripts/check-arm64.sh

## Install the amd64 package into a fresh Debian root (needs root, debootstrap).
test-deb:
	scripts/test-deb.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

test-go: setup models
	HIDIFFD_TEST_MODELS=$(CURDIR)/$(MODELS) $(GO) test -count=1 -timeout 40m ./...

test-python: deps
	$(PYTHON) -m pytest -q engine_build/tests

test: vet test-go test-python

run: setup build
	scripts/run-local.sh

bench: setup build models
	scripts/bench.sh

## The long fault run (not part of `make test`: about ten minutes): the real
## binary SIGKILLed 200 times over a mixed stream with same-name frames,
## invariants checked after every kill (test/crash/fault_test.go). Knobs:
## HIDIFFD_FAULT_FILES, HIDIFFD_FAULT_KILLS, HIDIFFD_FAULT_SEED.
fault-run: setup models
	HIDIFFD_TEST_MODELS=$(CURDIR)/$(MODELS) HIDIFFD_FAULT_RUN=1 $(GO) test -count=1 -timeout 90m -run '^TestFaultRun$$' -v ./test/crash/

## Several daemons on one spool (issue 15; not part of `make test`: several
## minutes): three real daemons, 300 frames, 10 SIGKILLs with restarts and
## one daemon killed for good; takeover times logged
## (test/crash/shared_test.go). Knobs: HIDIFFD_SHARED_DAEMONS,
## HIDIFFD_SHARED_FILES, HIDIFFD_SHARED_KILLS, HIDIFFD_SHARED_SEED.
shared-run: setup models
	HIDIFFD_TEST_MODELS=$(CURDIR)/$(MODELS) HIDIFFD_SHARED_RUN=1 $(GO) test -count=1 -timeout 60m -run '^TestSharedRun$$' -v ./test/crash/

clean:
	rm -rf build
