#!/usr/bin/env bash
# Ten consecutive rollouts of a 3-replica service under steady load.
#
# Builds berth (dist profile) and the test image, starts berth with its admin
# API, runs three replicas of a compose-labelled service, measures a steady
# window, then rolls the service out ten times (alternating two image tags)
# with the same load running. Prints requests sent, failed, and p99 latency
# during the rollouts against the steady state. Target: 0 failed, p99 within 2x.
#
#   benches/rollout.sh          # ROLLOUTS=10 STEADY=10 WORKERS=8
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null || { echo "needs a Docker engine" >&2; exit 1; }
[ -x /bin/busybox ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2; }
tests/image/build.sh >&2
cargo build --profile dist --bin berth >&2
exec python3 benches/rollout_bench.py "$@"
