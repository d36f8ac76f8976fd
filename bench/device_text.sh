#!/usr/bin/env bash
# The text task on a GPU in one device call: its variable-length path checked first (short runs of
# token batching under CUDA_LAUNCH_BLOCKING, so that a kernel fault names its op; eager, then as
# `compile: auto` runs it), then the tokens-vs-cost batching figure (issue 20 item 3) unless
# CHECK_ONLY is set. Logs and JSON to $OUT.
#   (device) bash bench/device_text.sh [bench/batching_speed.py arguments for the figure]
. bench/device_env.sh /tmp/text_out
export OUT
ARGS="--device cuda --seq-len 4096 --tokens-per-batch 65536 --max-batch-size 256 --d-model 384 --layers 5 --attention sparse"
for mode in false auto; do
  CUDA_LAUNCH_BLOCKING=1 timeout "${CHECK_S:-150}" python3 bench/batching_speed.py $ARGS --modes tokens \
    --compile $mode --steps 20 --eval-every 10 --json "$OUT/check_$mode.json" > "$OUT/check_$mode.log" 2>&1
  echo "check compile=$mode: rc=$?"; grep -v "train_loss" "$OUT/check_$mode.log" | tail -25
done
if [ -z "${CHECK_ONLY:-}" ]; then
  python3 bench/batching_speed.py $ARGS --steps 400 --eval-every 50 "$@" 2>&1 | tee "$OUT/batching_speed.log"
fi
