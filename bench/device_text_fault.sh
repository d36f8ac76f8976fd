#!/usr/bin/env bash
# The text task's GPU fault in one device call: the sparse layer at lengths of 10-14 blocks (one a
# process, bench/flex_shapes_probe.py), through our mask, torch's own, and padded to whole groups of
# blocks (attention.PAD_BLOCKS); then the text task itself (sparse, eager and compiled) with the
# smallest padding that passed, and, if time is left, the tokens-vs-cost figure. Logs to $OUT.
#   (device) bash bench/device_text_fault.sh
. bench/device_env.sh /tmp/text_fault_out
export OUT
probe() {
  local f="$OUT/p_${*// /_}.log"
  CUDA_LAUNCH_BLOCKING=1 timeout 60 python3 bench/flex_shapes_probe.py "$@" > "$f" 2>&1
  local rc=$?; echo "== $* rc=$rc: $(grep -E '^B=|Error' "$f" | tail -1)"; return $rc
}
probe 45 12 1408 32 model causal; probe 45 12 1408 32 model torch_mask; probe 45 12 1408 32 model eager_mask
for T in 1280 1664 1792; do probe 4 4 $T 32 contiguous; done
PB=
for pb in 2 4; do
  probe 45 12 1408 32 model ours $pb && probe 4 4 1664 32 contiguous ours $pb && { PB=$pb; break; }
done
echo "== PAD_BLOCKS that passed: ${PB:-none}"
[ -n "$PB" ] || exit 0
ARGS="--device cuda --seq-len 4096 --tokens-per-batch 65536 --max-batch-size 256 --d-model 384 --layers 5 --attention sparse --flex-pad-blocks $PB"
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
