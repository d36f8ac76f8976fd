#!/usr/bin/env bash
# The warm-start device call: bench/warm_start_moe.py (a source MoE study at seq 256, then cold /
# enqueue / prior / local studies at seq 512 over seeds, every GPU slot busy); log and JSON to $OUT.
# Optuna and SQLAlchemy travel as wheels in .whl (carry it).
#   (device) bash bench/device_warm_start.sh     # env: SEEDS, TRIALS, SOURCE_TRIALS, STEPS, PER_GPU, BUDGET_S
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/warm_start_out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv
python3 -c 'import torch, optuna, sqlalchemy; print("torch", torch.__version__, "optuna", optuna.__version__, "sqlalchemy", sqlalchemy.__version__)'
rm -rf /tmp/warm_start_moe
time python3 bench/warm_start_moe.py --seeds "${SEEDS:-3}" --trials "${TRIALS:-8}" \
  --source-trials "${SOURCE_TRIALS:-16}" --steps "${STEPS:-300}" --per-gpu "${PER_GPU:-4}" \
  --budget-s "${BUDGET_S:-420}" --workdir /tmp/warm_start_moe --out "$OUT/warm_start_moe.json" \
  2>&1 | tee "$OUT/warm_start_moe.log"
