#!/usr/bin/env bash
# The exact command that produced this folder: the cifar10_small correlation study on
# real CIFAR-10 (the JPEG copy, as an image-folder tarball), on one lent GPU, 16 runs at
# a time through the joblib launcher, measures at the end of every run, then the report.
#   DATA=/path/to/cifar10-jpeg.tar.gz bash results/cifar10_small/run_gpu.sh
# Training stops after TRAIN_SECONDS; what finished is collected (see report.md).
set -u
DATA=${DATA:-.data/cifar10-jpeg.tar.gz}
SWEEP=${SWEEP:-multirun/cifar10_small}
DEST=${DEST:-results/cifar10_small}
export PYTHONUNBUFFERED=1
if ! python3 -c "import hydra, hydra_plugins.hydra_joblib_launcher" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name --format=csv,noheader
# decode the JPEGs once into the cache, so that the 16 workers do not all do it
python3 -c "from srr_bench.data import load_data; load_data(dict(name='imagefolder', root='$(dirname "$DATA")', options=dict(path='$(basename "$DATA")')))"
timeout "${TRAIN_SECONDS:-300}" python3 -c "from sweeps.cli import train_main; train_main()" -m experiment=cifar10_small \
  data=imagefolder data.root="$(dirname "$DATA")" data.options.path="$(basename "$DATA")" \
  launcher=joblib hydra.launcher.n_jobs=16 train.device=cuda hydra.sweep.dir="$SWEEP" > "$DEST/train.log" 2>&1
echo "training exit code $? ($(ls "$SWEEP" | wc -l) run directories)"
python3 -m analysis.cli collect "$SWEEP" -o "$DEST/results.csv"
python3 -m analysis.cli report "$DEST/results.csv" --out "$DEST/report" --bootstrap 200 | tail -40
