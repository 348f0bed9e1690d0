#!/usr/bin/env bash
# berth against nginx and haproxy as reverse proxies, side by side in one run.
#
# Two nginx backends (`return 200`) on loopback; direct, berth, nginx and
# haproxy measured in turns with wrk (-t1 -c50), each proxy with one worker
# pinned to CPU 1, wrk and the backends on CPU 0. Besides req/s and latency it
# prints each proxy's own CPU time per request (user+sys of the proxy's
# processes over the run / requests served), the fair measure of proxy cost on
# two cores, where the rig itself saturates. A -pol row runs a route with
# basic auth (bcrypt) + rate limit + headers on berth and on nginx (POLICY=0
# leaves it out). Last line: berth/nginx ratios.
#
#   benches/proxy.sh            # RUNS=5 DURATION=10 CONNS=50 by default
#   BASELINE=/tmp/berth-old benches/proxy.sh   # also another berth build, side by side
set -euo pipefail
cd "$(dirname "$0")/.."

need=""
for p in wrk nginx haproxy htpasswd; do command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || need="$need $p"; done
if [ -n "$need" ]; then
    echo "installing:$need" >&2
    need=${need/htpasswd/apache2-utils}
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >&2
fi
cargo build --profile dist --bin berth >&2
exec python3 benches/proxy_bench.py "$@"
