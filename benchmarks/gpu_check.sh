#!/usr/bin/env bash
# The GPU checks and benchmarks, as one script for a lent GPU machine:
#   bash benchmarks/gpu_check.sh            (results also under $OUT when set)
# Installs nothing from the network: Hydra's and numba's wheels travel in .whl/ when the machine
# lacks them (pip download hydra-core omegaconf antlr4-python3-runtime numba llvmlite -d .whl
# --python-version <the device's> --only-binary :all:, then carry .whl).
set -u
OUT=${OUT:-/tmp/srr-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16
if ! python3 -c "import hydra, numba" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest tests/test_gpu.py tests/test_measures_gpu.py tests/test_models.py -q -x -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"
python3 -m benchmarks.train_speed --device cuda --size cifar_tiny --batch 2048 --ref-batch 256 --steps 30 --rounds 3 --compile 2>&1 | tee "$OUT/train_speed_compiled.txt" | tail -6
python3 -m benchmarks.train_speed --device cuda --size cifar_tiny --batch 1024 --ref-batch 256 --steps 30 --rounds 3 2>&1 | tee "$OUT/train_speed_eager.txt" | tail -6
python3 -m benchmarks.reg_speed --device cuda --size cifar_tiny --batch 256 --steps 20 --rounds 3 2>&1 | tee "$OUT/reg_speed_eager.txt" | tail -6
python3 -m benchmarks.reg_speed --device cuda --size cifar_tiny --batch 256 --steps 20 --rounds 3 --compile 2>&1 | tee "$OUT/reg_speed_compiled.txt" | tail -6
# the paper's sizes: CRATE-base geometry (768/12/12) at 32 px, patch 4
python3 -m benchmarks.train_speed --device cuda --size cifar_base --batch 1024 --ref-batch 256 --steps 20 --rounds 3 --compile 2>&1 | tee "$OUT/train_speed_base_compiled.txt" | tail -6
python3 -m benchmarks.train_speed --device cuda --size cifar_base --batch 512 --ref-batch 256 --steps 20 --rounds 3 2>&1 | tee "$OUT/train_speed_base_eager.txt" | tail -6
# the analysis of 100,000 models x 40 measures on the machine's CPU cores (target: <= 60 s on 2 cores)
python3 -m benchmarks.analysis_speed --models 100000 --seeds 200 2>&1 | tee "$OUT/analysis_speed_100k.txt" | tail -9
