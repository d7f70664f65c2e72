#!/usr/bin/env bash
# The main runs of benchmarks/PROTOCOL.md, in the pre-registered order; rerun it to resume (scored runs are skipped).
# Usage: benchmarks/run_protocol_v2.sh RESULTS_REPO   (the checkout whose benchmarks/results/v2 receives and commits
# the runs; the code that trains is this script's own checkout)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
RESULTS_REPO="${1:-$(dirname "$HERE")}"
export OMP_WAIT_POLICY=PASSIVE
run() {  # benchmark, then run_quality arguments
    local bench="$1"; shift
    python "$HERE/quality/run_quality.py" --benchmark "$bench" --results "$RESULTS_REPO/benchmarks/results/v2/$bench" \
        --commit "$@"
}
# pilot: 6 seeds at the primary budget on both benchmarks
run synthetic --n-labeled 2 --seeds 0 1 2 3 4 5
run inia19 --n-labeled 2 --seeds 0 1 2 3 4 5
# main: up to 10 seeds at the primary budget (the cap of the protocol), then the secondary budgets
run synthetic --n-labeled 2 --seeds 6 7 8 9
run inia19 --n-labeled 2 --seeds 6 7 8 9
run synthetic --n-labeled 4 8 --seeds 0 1
run inia19 --n-labeled 4 8 --seeds 0 1
