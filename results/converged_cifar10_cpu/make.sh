#!/usr/bin/env bash
# The exact commands that produced this folder (issue 11: the converged study on a 2-core CPU).
#   bash results/converged_cifar10_cpu/make.sh train     # train + measure the grid (resumable; hours)
#   bash results/converged_cifar10_cpu/make.sh analyse   # copy the finished runs' small files here, tables, figures
#   bash results/converged_cifar10_cpu/make.sh retest    # 16 runs trained again with 2 threads; test-retest report
#   bash results/converged_cifar10_cpu/make.sh layernorm # path-norm's frozen LayerNorm scales, runs with weights
# Training: experiment=converged_cifar10_cpu (sweeps/conf/experiment/), two runs at a time,
# one thread each (the experiment sets train.threads=1), on the shared CIFAR-10 JPEG copy.
# A run directory whose metrics.json (and, with measures on, complete measures.json) exists
# is never retrained, so `train` continues a grid stopped part-way. To continue it on another
# machine from this folder alone: copy runs/* into $SWEEP first (they are finished runs kept
# without their weights, which a relaunch leaves as they are). A trained run whose measures
# are incomplete (a specification added to the study after it was measured) is measured by
# the relaunch from its weights, not retrained; a copy without weights cannot be.
set -eu
SWEEP=${SWEEP:-/root/srr-grids/converged}
DEST=${DEST:-results/converged_cifar10_cpu}
PY=${PY:-.venv/bin/python}
. "$(dirname "$0")/../study.sh"
export PYTHONUNBUFFERED=1 SRR_DATA=${SRR_DATA:-../shared/data}
case "${1:-analyse}" in
train)
  $PY -c "from sweeps.cli import train_main; train_main()" -m experiment=converged_cifar10_cpu launcher=joblib \
    hydra.sweep.dir="$SWEEP" >> "$SWEEP.log" 2>&1 ;;
analyse)
  # Finished runs only (done with every measure stored, or diverged): their small files.
  study_analyse
  study_runs_md > "$DEST/runs.md"
  $PY -m benchmarks.grid_cost "$DEST/runs" --jobs 2 > "$DEST/grid_cost.txt" ;;  # the runs analysed here
retest)
  # Test-retest (issue 19): the 16 runs at width 64, batch 64, no dropout (4 variants x 2 lr x
  # 2 seeds) trained and measured again, one at a time with train.threads=2 instead of 1 (a
  # float-level perturbation: another reduction order in the multithreaded kernels; the thread
  # count is not part of the run id, so the run ids are the grid's). Run it from a checkout of
  # the code that trained the grid (CODE; it was fb2cc9d), so that every measure is the same
  # version in both tables and only the floats differ.
  CODE=$(cd "${CODE:-.}" && pwd)
  RETEST=${RETEST:-/root/srr-grids/retest_threads2}
  PYABS=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
  study_resume "$DEST/retest_threads2/runs" "$RETEST"  # the retest's runs committed so far
  (cd "$CODE" && PYTHONPATH="$CODE" "$PYABS" -c "from sweeps.cli import train_main; train_main()" -m \
    experiment=converged_cifar10_cpu launcher=basic model.dim=64 train.batch_size=64 model.dropout=0.0 \
    train.threads=2 hydra.sweep.dir="$RETEST" >> "$RETEST.log" 2>&1)
  $PY -m sweeps.status "$RETEST" --keep-light "$DEST/retest_threads2/runs"
  $PY -m analysis.cli collect "$DEST/retest_threads2/runs" -o "$DEST/retest_threads2/results.csv"
  for gap in gap_acc gap_loss; do
    $PY -m analysis.cli retest "$DEST/results.csv" "$DEST/retest_threads2/results.csv" --gap "gen.$gap" \
      --out "$DEST/retest_threads2/$gap" > "$DEST/retest_threads2/$gap.log" 2>&1
  done ;;
layernorm)
  # The 21 runs of the sweep that kept their weights (the last block trained, dropout 0.1 x
  # width 128): path_norm recomputed with its LayerNorm diagnostic (issue 19).
  $PY "$DEST/layernorm_scales.py" "$SWEEP" > "$DEST/layernorm_scales.csv" ;;
*) echo "usage: $0 train|analyse|retest|layernorm" >&2; exit 2 ;;
esac
