# Courier's two commands: `make demo` runs the main job end to end, `make test` runs every test.
# Both install what is missing (Redis from Debian's packages, Garage with cargo into
# $(COURIER_TOOLS)) and reuse it when present.

SHELL := /bin/bash
export COURIER_TOOLS ?= $(HOME)/.cache/courier/tools
# cargo-nextest, when ensure-tools had to install it, lives here.
export PATH := $(COURIER_TOOLS)/bin:$(PATH)
CARGO ?= cargo

.PHONY: demo test lint fmt tools build bench soak image

tools:
	scripts/ensure-tools.sh --nextest --prometheus --python

build:
	$(CARGO) build --workspace --all-targets

demo:
	scripts/demo.sh

# Every test in its own process, binaries side by side (.config/nextest.toml says how many
# at once and which take turns).
test: tools
	scripts/check-deploy.sh
	$(CARGO) nextest run --workspace --all-targets --no-fail-fast
	@echo "make test: all tests passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Throughput and memory against a Redis and a Garage it starts itself; prints one Markdown
# table (docs/benchmarks.md). Sizes: BENCH_* variables, see crates/bench/src/config.rs.
bench:
	scripts/ensure-tools.sh --python
	$(CARGO) build --release -p courier -p courier-bench -p courier-test-support
	$${CARGO_TARGET_DIR:-target}/release/courier-bench

# Bounded Redis memory at full size: 100,000 deliveries through the API and two release-built
# workers with a 3 s retention, then Redis must be back at its baseline (make test runs 2,000).
SOAK_DELIVERIES ?= 100000
soak: tools
	RETENTION_TEST_DELIVERIES=$(SOAK_DELIVERIES) $(CARGO) test --release -p courier --test e2e_retention -- --nocapture

# The container image, built with podman (installed from Debian's packages when missing):
# the multi-stage Containerfile where its base images can be pulled, else the release binary
# built here and the libraries it needs in a FROM scratch image (deploy/image/). IMAGE names
# it; IMAGE_FROM=source|binary forces one way. See scripts/build-image.sh.
image:
	scripts/build-image.sh
