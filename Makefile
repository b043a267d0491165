# One fixed feature set (the default features) for build, test and demo: a
# feature change rebuilds most of burn. The demo uses the same dev-profile
# binary as the tests (dependencies are optimised in the dev profile, see
# Cargo.toml), so `make demo` after `make test` needs no second build.

CARGO ?= cargo
ASD ?= $(or $(CARGO_TARGET_DIR),target)/debug/asd
DEMO ?= demo

.PHONY: all build test demo fmt clippy lint clean-demo

all: build

build:
	$(CARGO) build

test:
	$(CARGO) test

demo: build
	./scripts/demo.sh $(ASD) $(DEMO)

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

lint: fmt clippy

clean-demo:
	rm -rf $(DEMO)
