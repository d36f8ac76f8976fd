#!/usr/bin/env bash
# The scheduler's device call: study throughput for 1/2/4 trials per GPU, then no pruning vs
# Hyperband; logs and JSON to $OUT. Optuna and SQLAlchemy travel as wheels in .whl (carry it).
#   (device) bash bench/device_study.sh            # env: STEPS, TRIALS, PER_GPU, HB_TIMEOUT
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/study_out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv
python3 -c 'import torch, optuna, sqlalchemy; print("torch", torch.__version__, "optuna", optuna.__version__, "sqlalchemy", sqlalchemy.__version__)'
rm -rf /tmp/study_throughput
python3 bench/study_throughput.py --mode throughput --per-gpu ${PER_GPU:-1 2 4} \
  --trials-per-slot 2 --steps "${STEPS:-300}" --study-timeout "${TP_TIMEOUT:-100}" --out "$OUT/study_throughput.json" \
  2>&1 | tee "$OUT/study_throughput.log"
python3 bench/study_throughput.py --mode hyperband --trials "${TRIALS:-24}" --steps "${STEPS:-300}" \
  --hb-per-gpu 2 --study-timeout "${HB_TIMEOUT:-110}" --out "$OUT/study_hyperband.json" \
  2>&1 | tee "$OUT/study_hyperband.log"
