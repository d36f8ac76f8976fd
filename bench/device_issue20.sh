#!/usr/bin/env bash
# Issue 20 on a GPU in one device call, each stage under its own time limit (a fault or a hang ends
# only its stage), most wanted first; logs to $OUT:
#   1. the GPU MoE tests (Triton SwiGLU custom ops against the plain SwiGLU, layouts compiled vs eager);
#   2. training steps: adaptive top-k (compact, static) and fixed top-k, our SwiGLU kernels against
#      Inductor's (bench/model_speed.py; TRAIN_CONFIGS to change, PROFILE=1 for kernel tables);
#   3. the text task's fault: the sparse layer at the first text batch's shapes (contiguous and as
#      the model lays q, k, v out), then the text task's training with dense attention, eager.
#   (device) bash bench/device_issue20.sh
. bench/device_env.sh /tmp/issue20_out
export OUT
stage() {   # stage NAME SECONDS command...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: rc=$? ($(date -u +%T))"
}
stage moe_tests 120 python3 -m pytest -q -m gpu tests/model_tests/test_moe.py -p no:cacheprovider
tail -3 "$OUT/moe_tests.log"
stage train "${TRAIN_S:-300}" python3 bench/model_speed.py --only train ${PROFILE:+--profile} \
  --train-configs ${TRAIN_CONFIGS:-adaptive_static adaptive top3 top3_torch} --json "$OUT/model_speed.json"
grep -v '^{' "$OUT/train.log" | tail -40
if [ -z "${SKIP_TEXT:-}" ]; then
  IFS=, read -ra probes <<< "${PROBES:-45 12 1424 32 model,45 12 1424 32,4 12 1424 32 model,45 12 1408 32 model}"
  for s in "${probes[@]}"; do
    CUDA_LAUNCH_BLOCKING=1 stage "probe_${s// /_}" 90 python3 bench/flex_shapes_probe.py $s
    tail -2 "$OUT/probe_${s// /_}.log"
  done
  [ -n "${SKIP_TEXT_RUN:-}" ] || CUDA_LAUNCH_BLOCKING=1 stage text_dense 120 python3 bench/batching_speed.py --device cuda --seq-len 4096 \
    --tokens-per-batch 65536 --max-batch-size 256 --d-model 384 --layers 5 --attention dense --modes tokens \
    --compile false --steps 3 --eval-every 3 --docs 3000 --json "$OUT/text_dense.json"
  [ -f "$OUT/text_dense.log" ] && grep -v train_loss "$OUT/text_dense.log" | tail -6
fi
