# berth — the two commands users need are `make run` and `make test`.

CARGO ?= cargo
# Debian packages the test suite needs: cmake builds pingora's zlib-ng,
# busybox-static is the test backend image, pebble the ACME server, curl the
# HTTPS client of the TLS tests, bind9-dnsutils the `dig` of the DNS tests.
TEST_PACKAGES := cmake busybox-static pebble curl bind9-dnsutils
# From PyPI: schemathesis fuzzes the admin API against its OpenAPI document.
PIP_PACKAGES := schemathesis
# The side-by-side benchmark also runs nginx and haproxy, driven by wrk.
BENCH_PACKAGES := cmake wrk nginx haproxy dnsperf dnsmasq-base
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test deps bench-deps test-images lint release bench

## Run berth on the embedded default config (HTTP on :8080).
run:
	$(CARGO) run --bin berth -- serve

## Install what is missing, build the test image, check formatting and lints, run every test.
test: deps test-images lint
	$(CARGO) test --all-targets

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
