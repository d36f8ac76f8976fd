#!/usr/bin/env bash
# The warm-start device call: bench/warm_start_moe.py (a source MoE study at seq 256, then cold /
# enqueue / prior / local studies at seq 512 over seeds, every GPU slot busy); log and JSON to $OUT.
# Optuna and SQLAlchemy travel as wheels in .whl (carry it).
#   (device) bash bench/device_warm_start.sh     # env: SEEDS, TRIALS, SOURCE_TRIALS, STEPS, PER_GPU, BUDGET_S, STRATEGIES
. bench/device_env.sh /tmp/warm_start_out
rm -rf /tmp/warm_start_moe
time python3 bench/warm_start_moe.py --seeds "${SEEDS:-2}" --trials "${TRIALS:-8}" \
  --source-trials "${SOURCE_TRIALS:-16}" --steps "${STEPS:-1000}" --per-gpu "${PER_GPU:-8}" \
  --budget-s "${BUDGET_S:-440}" --strategies ${STRATEGIES:-enqueue local} --workdir /tmp/warm_start_moe --out "$OUT/warm_start_moe.json" \
  2>&1 | tee "$OUT/warm_start_moe.log"
