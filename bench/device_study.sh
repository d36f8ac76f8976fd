#!/usr/bin/env bash
# The scheduler's device call (issue 5): study throughput and where the slots' time goes, then no
# pruning vs Hyperband; logs and JSON to $OUT. Optuna, SQLAlchemy & co. travel as wheels in .whl.
#   (device) PART=all bash bench/device_study.sh     # PART: tests | throughput | hyperband | all
# Env: STEPS, LONG_STEPS, PER_GPU, LONG_PER_GPU, TRIALS_PER_SLOT, COMPILED_TRIALS, TRIALS, HB_TRIALS,
#      HB_SEEDS, HB_FIRST_SEED, HB_PRUNERS, HB_STEPS, HB_PER_GPU, HB_TASK (mqar | text), TP_TIMEOUT, HB_TIMEOUT.
# Hyperband's trials run 297 steps: with min_steps 33 and reduction factor 3 its rungs are 33, 99
# and 297, the last step, where trials are no longer judged (objective.py), so none is pruned at its end.
. bench/device_env.sh /tmp/study_out
nproc
PART=${PART:-all}
if [ "$PART" = tests ] || [ "$PART" = all ]; then   # the scheduler's GPU tests (memory, pinning, OOM)
  python3 -m pytest -q -m gpu tests/scheduler_tests -p no:cacheprovider -o addopts= 2>&1 | tee "$OUT/gpu_tests.log"
fi
tp() {  # tp NAME ARGS...: one throughput run
  local name=$1; shift
  python3 bench/study_throughput.py --mode throughput --workdir /tmp/stp_$name \
    --study-timeout "${TP_TIMEOUT:-240}" --out "$OUT/tp_$name.json" "$@" 2>&1 | tee "$OUT/tp_$name.log"
}
if [ "$PART" = throughput ] || [ "$PART" = all ]; then
  tp short --per-gpu ${PER_GPU:-1 2 4} --trials-per-slot "${TRIALS_PER_SLOT:-6}" --steps "${STEPS:-300}" --eval-every 100
  tp compiled --per-gpu 1 --trials-per-slot "${COMPILED_TRIALS:-4}" --steps "${STEPS:-300}" --eval-every 100 --compile
  tp long --per-gpu ${LONG_PER_GPU:-1 4} --trials-per-slot 3 --steps "${LONG_STEPS:-1500}" --eval-every 250
fi
if [ "$PART" = hyperband ] || [ "$PART" = all ]; then
  python3 bench/study_throughput.py --mode hyperband --trials "${TRIALS:-40}" --hb-trials "${HB_TRIALS:-120}" \
    --seeds "${HB_SEEDS:-1}" --first-seed "${HB_FIRST_SEED:-0}" --pruners ${HB_PRUNERS:-hyperband} --task "${HB_TASK:-mqar}" --steps "${HB_STEPS:-297}" --hb-per-gpu "${HB_PER_GPU:-4}" --study-timeout "${HB_TIMEOUT:-240}" \
    --workdir /tmp/stp_hb --out "$OUT/hyperband.json" 2>&1 | tee "$OUT/hyperband.log"
fi
