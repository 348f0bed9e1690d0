#!/usr/bin/env bash
# A short pass of every fuzz target: its committed seeds and corpus, then
# FUZZ_SECONDS of mutations. `make fuzz-smoke` runs it, and so does `make
# test`. New inputs go to a scratch directory (the committed ones are not
# touched); a crash fails the pass, its input under fuzz/artifacts/TARGET/.
#
#   FUZZ_SECONDS=5 FUZZ_FLAGS="--dev -s none" FUZZ_TARGETS="labels dns" fuzz/smoke.sh
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-5}
read -r -a flags <<< "${FUZZ_FLAGS:---dev -s none}"
read -r -a targets <<< "${FUZZ_TARGETS:-labels config dns decide compose}"
cargo=${CARGO:-cargo}

start=$(date +%s)
"$cargo" fuzz build "${flags[@]}"
echo "fuzz build: $(( $(date +%s) - start ))s"
for t in "${targets[@]}"; do
    scratch=$(mktemp -d)
    log=$(mktemp)
    # Every committed input first (a time limit could cut that short), then
    # mutations of the seeds (replaying the whole corpus again would eat the
    # seconds of an unoptimised build).
    if "$cargo" fuzz run "${flags[@]}" "$t" "seeds/$t" "corpus/$t" -- -runs=0 >"$log" 2>&1 &&
        "$cargo" fuzz run "${flags[@]}" "$t" "$scratch" "seeds/$t" -- \
            -max_total_time="$seconds" -print_final_stats=1 >>"$log" 2>&1; then
        runs=$(grep -oE 'number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
        cov=$(grep -oE 'DONE +cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo '?')
        inputs=$(find "seeds/$t" "corpus/$t" -type f | wc -l)
        echo "fuzz $t: ok: its $inputs committed inputs, then $runs runs in ${seconds}s (cov $cov)"
        rm -rf "$scratch" "$log"
    else
        rc=$?
        tail -n 40 "$log"
        rm -rf "$scratch" "$log"
        echo "fuzz $t: FAILED (exit $rc); its input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
