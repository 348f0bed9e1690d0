#!/usr/bin/env bash
# Five consecutive redeploys of a two-service compose project with a changed
# build, under steady load: `berth deploy` against `docker-compose up -d
# --build` (Debian's compose v1) on the same project, both routed by the same
# berth, in one run.
#
# Prints per redeploy the build time and the time from trigger to done, then
# per tool the requests sent and failed during the redeploys (target for
# berth: 0) and p99 latency during the redeploys against the steady state,
# and the ratios berth/compose.
#
#   benches/deploy.sh            # DEPLOYS=5 STEADY=8 WORKERS=4
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null || { echo "needs a Docker engine" >&2; exit 1; }
command -v docker-compose >/dev/null || { echo "needs Debian's docker-compose (apt-get install --no-install-recommends docker-compose)" >&2; exit 1; }
[ -x /bin/busybox ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2; }
tests/image/build.sh >&2
if [ -z "${BERTH:-}" ]; then
    bin=target/dist/berth
    if [ ! -x "$bin" ] || [ -n "$(find src Cargo.toml Cargo.lock config -newer "$bin" -print -quit)" ]; then
        cargo build --profile dist --bin berth >&2
    fi
fi
exec python3 benches/deploy_bench.py "$@"
