#!/usr/bin/env bash
# The model's one device call: GPU correctness checks, then the speed benchmark; logs and JSON to $OUT.
#   (device) bash bench/device_model.sh [bench/model_speed.py arguments]
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/model_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,clocks.sm,temperature.gpu --format=csv
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
if [ -z "${SKIP_TESTS:-}" ]; then
  python3 -m pytest -q -m gpu tests/model_tests -p no:cacheprovider -o addopts= 2>&1 | tee "$OUT/gpu_tests.log"
fi
python3 bench/model_speed.py "$@" 2>&1 | tee "$OUT/model_speed.log"
