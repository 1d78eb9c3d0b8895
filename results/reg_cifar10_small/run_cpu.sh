#!/usr/bin/env bash
# The exact commands that produced this folder: the CPU-sized regularization study on real
# CIFAR-10 (the JPEG copy, as an image-folder tarball), CE vs CE + SRR for every CRATE
# variant (experiment=reg_cifar10_small) and the choice of layer for CRATE
# (experiment=reg_layers_cifar10_small, same sweep directory), then the table and figures.
#   DATA=/path/to/cifar10-jpeg.tar.gz bash results/reg_cifar10_small/run_cpu.sh
set -u
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
SWEEP=${SWEEP:-multirun/reg_cifar10_small}
DEST=${DEST:-results/reg_cifar10_small}
PY=${PY:-.venv/bin/python}
export PYTHONUNBUFFERED=1
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
for experiment in reg_cifar10_small reg_layers_cifar10_small; do
  $PY -c "from sweeps.cli import train_main; train_main()" -m experiment=$experiment \
    data=imagefolder data.root="$(dirname "$DATA")" data.options.path="$(basename "$DATA")" \
    hydra.sweep.dir="$SWEEP" ${TRAIN_ARGS:-} >> "$DEST/train.log" 2>&1
  echo "$experiment: exit code $? ($(ls "$SWEEP" | wc -l) run directories)"
done
$PY -m analysis.cli regularization "$SWEEP" --out "$DEST"
