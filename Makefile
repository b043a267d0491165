# One fixed feature set (the default features) for build, test and demo: a
# feature change rebuilds most of burn. The demo uses the same dev-profile
# binary as the tests (dependencies are optimised in the dev profile, see
# Cargo.toml), so `make demo` after `make test` needs no second build.

CARGO ?= cargo
ASD ?= $(or $(CARGO_TARGET_DIR),target)/debug/asd
DEMO ?= demo

.PHONY: all build test demo fmt fmt-check clippy lint clean-demo setup-cuda gpu-bundle bench bench-venv

all: build

build:
	$(CARGO) build

test:
	$(CARGO) test

demo: build
	./scripts/demo.sh $(ASD) $(DEMO)

# Rewrites the sources; `make lint` only checks (as CI does).
fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

lint: fmt-check clippy

# LLVM 23.1 from PyPI for the `cuda` and `cpu` features (README "Backends").
setup-cuda:
	./scripts/setup-cuda.sh --libdevice

# Release binaries with cuda/wgpu/cpu + what scripts/gpu-check.sh needs, in target/gpu-bundle.
gpu-bundle:
	./scripts/gpu-bundle.sh

# Speed suite against PyTorch/librosa/scikit-learn (BENCHMARKS.md): release build, then
# scripts/bench.py rewrites the table between the `make bench` markers. The reference python
# comes from `make bench-venv` (or ASD_BENCH_PYTHON). About 15 minutes on 2 cores after the build.
bench:
	$(CARGO) build --release --bin asd --example bench_frontends
	python3 scripts/bench.py $(BENCH_ARGS)

bench-venv:
	./scripts/bench-venv.sh

clean-demo:
	rm -rf $(DEMO)
