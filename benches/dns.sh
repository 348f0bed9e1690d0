#!/usr/bin/env bash
# berth's internal DNS against dnsmasq, side by side in one run.
#
# One container of a compose service `web`; berth answers web.internal from
# its snapshot, dnsmasq answers the same name and address from a hosts file.
# dnsperf (on CPU 0) asks each in turns, each server pinned to CPU 1; prints
# queries/s, average latency and each server's CPU time per query, medians
# over RUNS runs of DURATION seconds. Last line: berth/dnsmasq ratios.
#
#   benches/dns.sh            # RUNS=3 DURATION=10 by default
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null || { echo "needs a Docker engine" >&2; exit 1; }
need=""
for p in dnsperf:dnsperf dnsmasq:dnsmasq-base dig:bind9-dnsutils busybox:busybox-static; do
    command -v "${p%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${p%%:*}" ] || need="$need ${p#*:}"
done
if [ -n "$need" ]; then
    echo "installing:$need" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >&2
fi
tests/image/build.sh >&2
cargo build --profile dist --bin berth >&2
exec python3 benches/dns_bench.py "$@"
