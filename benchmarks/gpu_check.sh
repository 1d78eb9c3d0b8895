#!/usr/bin/env bash
# The GPU checks and benchmarks, as one script for a lent GPU machine:
#   bash benchmarks/gpu_check.sh            (results also under $OUT when set)
# Installs nothing from the network: Hydra's wheels travel in .whl/ when the machine lacks them.
set -u
OUT=${OUT:-/tmp/srr-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16
if ! python3 -c "import hydra" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
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
