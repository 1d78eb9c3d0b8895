#!/usr/bin/env bash
# The exact commands of the training-set-size study (issue 19; experiment ntrain_cifar10_cpu).
#   bash results/ntrain_cifar10_cpu/make.sh train     # train + measure the 40 runs (resumable; ~2 sessions)
#   bash results/ntrain_cifar10_cpu/make.sh analyse   # copy the finished runs' small files here, tables, figures
# The 8 runs at 1,000 images are the converged grid's (same run ids): `train` copies their
# committed small files into the sweep first, so they are not retrained. Runs finished here
# are kept under runs/ without weights, so `train` on another machine continues the grid.
set -eu
SWEEP=${SWEEP:-/root/srr-grids/ntrain}
DEST=${DEST:-results/ntrain_cifar10_cpu}
PY=${PY:-.venv/bin/python}
. "$(dirname "$0")/../study.sh"
export PYTHONUNBUFFERED=1 SRR_DATA=${SRR_DATA:-../shared/data}
case "${1:-analyse}" in
train)
  mkdir -p "$SWEEP"
  # the converged grid's runs at this study's setting, and this study's finished runs
  $PY - "$SWEEP" results/converged_cifar10_cpu/runs "$DEST/runs" <<'PY'
import json, shutil, sys
from pathlib import Path
sweep, *sources = map(Path, sys.argv[1:])
want = {"width": 64, "lr": 0.001, "batch_size": 64, "dropout": 0.0, "n_train": 1000}
for src in sources:
    for run in sorted(src.glob("*/hparams.json")) if src.exists() else []:
        hp = json.loads(run.read_text())
        if src.name == "runs" and src.parent.name == "converged_cifar10_cpu" and \
                any(hp.get(k) != v for k, v in want.items()):
            continue
        if not (sweep / run.parent.name).exists():
            shutil.copytree(run.parent, sweep / run.parent.name)
PY
  $PY -c "from sweeps.cli import train_main; train_main()" -m experiment=ntrain_cifar10_cpu launcher=joblib \
    hydra.sweep.dir="$SWEEP" >> "$SWEEP.log" 2>&1 ;;
analyse)
  study_analyse ;;
*) echo "usage: $0 train|analyse" >&2; exit 2 ;;
esac
