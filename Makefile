# berth — the two commands users need are `make run` and `make test`.

CARGO ?= cargo
# Debian packages the test suite needs: cmake builds pingora's zlib-ng,
# busybox-static is the test backend image, pebble the ACME server, curl the
# HTTPS client of the TLS tests, bind9-dnsutils the `dig` of the DNS tests,
# git the repositories deployed by the deploy tests, docker-compose (v1,
# without recommends: they could replace the engine) the peer those tests
# check berth's containers against, apache2-utils the `htpasswd -B` whose
# hashes the basic-auth tests paste into labels.
TEST_PACKAGES := cmake busybox-static pebble curl bind9-dnsutils git docker-compose chromium chromium-driver apache2-utils bind9 bind9-utils
# From PyPI: schemathesis fuzzes the admin API against its OpenAPI document.
PIP_PACKAGES := schemathesis
# The side-by-side benchmark also runs nginx and haproxy, driven by wrk.
BENCH_PACKAGES := cmake wrk nginx haproxy dnsperf dnsmasq-base docker-compose apache2-utils
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test deps bench-deps test-images lint release bench

## Run berth on the embedded default config (HTTP on :8080).
run:
	$(CARGO) run --bin berth -- serve

## Install what is missing, build the test image, check formatting and lints, run every test,
## then a short pass of every fuzz target.
test: deps test-images lint
	$(CARGO) test --all-targets
	$(MAKE) --no-print-directory fuzz-smoke

deps:
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@for p in $(PIP_PACKAGES); do command -v $$p >/dev/null 2>&1 || { echo "installing $$p (PyPI)"; python3 -m pip install -q $$p; }; done

bench-deps:
	@$(MAKE) --no-print-directory deps TEST_PACKAGES="$(BENCH_PACKAGES)" PIP_PACKAGES=""

test-images:
	tests/image/build.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## An optimised binary: target/dist/berth.
release:
	BERTH_GIT_COMMIT=$$(git rev-parse --short HEAD 2>/dev/null) $(CARGO) build --profile dist --bin berth

## berth vs nginx vs haproxy, side by side (see benches/proxy.sh).
bench: bench-deps
	benches/proxy.sh

.PHONY: image
IMAGE ?= berth:latest

## A small image of berth FROM scratch (deploy/Dockerfile): the release binary, the
## libraries it links, CA certificates. `make image IMAGE=berth:dev` for another tag.
image: release
	deploy/image.sh target/dist/berth $(IMAGE)

# cargo-fuzz targets (fuzz/, README "Fuzzing"). Built without a sanitizer:
# the fuzzed code is safe Rust, so what there is to find is a panic, and that
# needs no nightly -Z flag. The smoke pass builds with `--dev` (unoptimised,
# debug assertions): the quickest build from scratch for a pass of seconds.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGET ?= labels
FUZZ_TIME ?= 600

.PHONY: fuzz-deps fuzz-smoke fuzz

fuzz-deps:
	@$(CARGO) fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' || \
		$(CARGO) install --locked cargo-fuzz@$(CARGO_FUZZ_VERSION)

## Every fuzz target over its committed seeds and corpus, then a few seconds of mutations each.
fuzz-smoke: fuzz-deps
	CARGO=$(CARGO) fuzz/smoke.sh

## One target for a while, optimised, adding to its corpus: make fuzz FUZZ_TARGET=dns FUZZ_TIME=600
fuzz: fuzz-deps
	cd fuzz && $(CARGO) fuzz run -s none $(FUZZ_TARGET) corpus/$(FUZZ_TARGET) seeds/$(FUZZ_TARGET) -- \
		$(if $(wildcard fuzz/dict/$(FUZZ_TARGET).dict),-dict=dict/$(FUZZ_TARGET).dict) \
		-max_total_time=$(FUZZ_TIME) -print_final_stats=1
