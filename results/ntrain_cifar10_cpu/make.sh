#!/usr/bin/env bash
# The exact commands of the training-set-size study (issue 19; experiment ntrain_cifar10_cpu).
#   bash results/ntrain_cifar10_cpu/make.sh train     # train + measure the 40 runs (resumable; ~2 sessions)
#   bash results/ntrain_cifar10_cpu/make.sh analyse   # copy the finished runs' small files here, tables, figures,
#                                                     # and the retest of the 8 runs the converged grid shares
# The 8 runs at 1,000 images have the converged grid's run ids but are trained again here, by
# this study's code, so that every measure is one version of its code across the 40 runs and
# the size-adjusted forms are stored (the experiment file says why). Runs finished here are
# kept under runs/ without weights, so `train` on another machine continues the grid.
set -eu
SWEEP=${SWEEP:-/root/srr-grids/ntrain}
DEST=${DEST:-results/ntrain_cifar10_cpu}
PY=${PY:-.venv/bin/python}
. "$(dirname "$0")/../study.sh"
export PYTHONUNBUFFERED=1 SRR_DATA=${SRR_DATA:-../shared/data}
case "${1:-analyse}" in
train)
  study_resume "$DEST/runs" "$SWEEP"  # this study's committed runs: a relaunch continues the grid
  $PY -c "from sweeps.cli import train_main; train_main()" -m experiment=ntrain_cifar10_cpu launcher=joblib \
    hydra.sweep.dir="$SWEEP" >> "$SWEEP.log" 2>&1 ;;
analyse)
  study_analyse
  study_runs_md > "$DEST/runs.md"
  $PY -m benchmarks.grid_cost "$DEST/runs" --jobs 2 > "$DEST/grid_cost.txt"
  # The 8 runs at 1,000 images have the converged grid's run ids: trained again here, in another
  # session and maybe on another machine, they are a test-retest of those runs (the PAC-Bayes rows
  # compare its version 2 there with version 3 here, so they are not).
  mkdir -p "$DEST/retest_converged"
  for gap in gap_acc gap_loss; do
    $PY -m analysis.cli retest results/converged_cifar10_cpu/results.csv "$DEST/results.csv" --gap "gen.$gap" \
      --out "$DEST/retest_converged/$gap" > "$DEST/retest_converged/$gap.log" 2>&1
  done ;;
*) echo "usage: $0 train|analyse" >&2; exit 2 ;;
esac
