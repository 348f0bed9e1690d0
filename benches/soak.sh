#!/usr/bin/env bash
# Twenty minutes of container churn under steady load on a stable service.
#
# Starts berth (dist profile) with its admin API and two compose-labelled
# services of the test image: `stable`, which nothing touches and which takes
# a steady load, and `churn`, which gets an action every few seconds in turns:
# rollouts, scale up and down, rolling restarts, docker stop/start of a
# replica, throwaway containers started and removed, containers with bad
# labels (a typo in a replica of `churn`, a bad port, a route without a
# host), a replica that never gets healthy. Prints the requests sent to and
# failed on the stable service (target: 0 failed) and berth's RSS, open fds
# and threads at start and end with end/start ratios (target: flat).
#
#   benches/soak.sh                  # DURATION=1200 WORKERS=4 CHURN_WORKERS=1 CHURN_EVERY=2
#   DURATION=90 benches/soak.sh      # a short pass
#   BERTH=/path/to/berth benches/soak.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null || { echo "needs a Docker engine" >&2; exit 1; }
[ -x /bin/busybox ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2; }
tests/image/build.sh >&2
if [ -z "${BERTH:-}" ]; then
    bin=target/dist/berth
    # Rebuilt only when a source is newer than the binary.
    if [ ! -x "$bin" ] || [ -n "$(find src Cargo.toml Cargo.lock config -newer "$bin" -print -quit)" ]; then
        cargo build --profile dist --bin berth >&2
    fi
fi
exec python3 benches/soak_bench.py "$@"
