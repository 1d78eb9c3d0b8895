#!/usr/bin/env bash
# The exact command that produced this folder: the cifar10_small correlation study,
# complete (all 64 runs), sized down to fit a 2-core CPU in about an hour. Same grid as
# experiment=cifar10_small (variant x lr x batch size x dropout x 2 seeds, width 96,
# depth 4), on real CIFAR-10 (the JPEG copy as an image-folder tarball) with:
#   1,000 training images (seeded, class-balanced; 100 per class), 2,000 test images,
#   30 epochs, no per-epoch train-set evaluation (it only feeds steps-to-CE, which these
#   runs never reach), and every default measure except the two Hessian ones (half of the
#   measuring time on a CPU).
#   DATA=/path/to/cifar10-jpeg.tar.gz bash results/cifar10_small_cpu/run_cpu.sh
# This folder's runs: TRAIN_ARGS=train.threads=1, beside another 1-thread sweep on the
# same 2 cores (thread counts do not change a run's identity; oversubscribed cores slow
# torch's CPU kernels down several times over).
set -u
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
SWEEP=${SWEEP:-multirun/cifar10_small_cpu}
DEST=${DEST:-results/cifar10_small_cpu}
PY=${PY:-.venv/bin/python}
export PYTHONUNBUFFERED=1
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
$PY -c "from sweeps.cli import train_main; train_main()" -m experiment=cifar10_small \
  data=imagefolder data.root="$(dirname "$DATA")" data.options.path="$(basename "$DATA")" \
  data.n_train=1000 train.epochs=30 train.eval_train_every_epoch=false 'measure.exclude=[hessian*]' \
  hydra.sweep.dir="$SWEEP" ${TRAIN_ARGS:-} >> "$DEST/train.log" 2>&1
echo "training exit code $? ($(ls "$SWEEP" | wc -l) run directories)"
$PY -m analysis.cli collect "$SWEEP" -o "$DEST/results.csv"
$PY -m analysis.cli report "$DEST/results.csv" --out "$DEST/report" --bootstrap 200 | tail -40
