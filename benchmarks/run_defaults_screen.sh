#!/usr/bin/env bash
# Issue 18's screen: one-attribute AsyCo variants at the protocol budget (2 labeled, 2000 iterations), seeds 0-2, on
# the synthetic benchmark; paired with today's AsyCo of the main runs (same seeds, same code but for the variant
# classes). A screen may drop candidates, never promote one (benchmarks/PROTOCOL.md, decision rule).
# Usage: benchmarks/run_defaults_screen.sh RESULTS_REPO
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
RESULTS_REPO="${1:-$(dirname "$HERE")}"
export OMP_WAIT_POLICY=PASSIVE
python "$HERE/quality/run_quality.py" --benchmark synthetic --work /tmp/asyco_quality_screen \
    --results "$RESULTS_REPO/benchmarks/results/v2/defaults_screen/synthetic" --commit --n-labeled 2 --seeds 0 1 2 \
    --methods asyco_unlabeledConsistencyOnly asyco_noRepresentation asyco_representationWeight01 \
    asyco_representationBottleneckOnly asyco_interHeadWeight1 asyco_noRemappedSupervision \
    asyco_classBalancedBranchOutput asyco_cpsBranchOutputWeight1 asyco_sharedViews asyco_residualB \
    asyco_rampupShort asyco_rampupLong asyco_branchOutputWeight3
