#!/usr/bin/env bash
# The text task's GPU fault in one device call: the sparse layer at the shape that faulted (11 blocks,
# 12 heads; bench/flex_shapes_probe.py, one run a process) unpadded (PAD_BLOCKS 0) and as the model
# now runs it (padded to a multiple of 4 blocks), our mask built eagerly, torch's mask of the same
# pattern (MASK_PROBES=1); then the text task itself (sparse attention, eager and compiled, the default padding) and,
# while BUDGET_S lasts, the tokens-vs-cost figure. Logs to $OUT.
#   (device) bash bench/device_text_fault.sh
. bench/device_env.sh /tmp/text_fault_out
export OUT
probe() {
  local f="$OUT/p_${*// /_}.log"
  CUDA_LAUNCH_BLOCKING=1 timeout 60 python3 bench/flex_shapes_probe.py "$@" > "$f" 2>&1
  local rc=$?; echo "== $* rc=$rc: $(grep -E '^B=|Error' "$f" | tail -1)"; return $rc
}
probe 45 12 1408 32 model ours 0; probe 45 12 1408 32 model ours 4
[ -z "${MASK_PROBES:-}" ] || { probe 45 12 1408 32 model eager_mask; probe 45 12 1408 32 model torch_mask; }
ARGS="--device cuda --seq-len 4096 --tokens-per-batch 65536 --max-batch-size 256 --d-model 384 --layers 5 --attention sparse"
for mode in false auto; do
  [ $(( ${BUDGET_S:-560} - SECONDS )) -gt 100 ] || break
  timeout 120 python3 bench/batching_speed.py $ARGS --modes tokens --compile $mode --steps 20 --eval-every 10 \
    --json "$OUT/check_$mode.json" > "$OUT/check_$mode.log" 2>&1
  echo "== text check compile=$mode: rc=$?"; grep -v train_loss "$OUT/check_$mode.log" | tail -5
done
left=$(( ${BUDGET_S:-560} - SECONDS )); echo "== figure: $left s left"; [ "$left" -gt 60 ] || exit 0
timeout "$left" python3 bench/batching_speed.py $ARGS --steps "${STEPS:-300}" --eval-every 50 \
  --json "$OUT/batching_speed.json" > "$OUT/batching_speed.log" 2>&1
echo "== figure: rc=$?"; grep -v train_loss "$OUT/batching_speed.log" | tail -12
