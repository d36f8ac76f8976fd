#!/usr/bin/env bash
# Device machine, issue 15: does MPS pay, then the GPU quick study end to end with the better layout.
#   bash bench/device_mps.sh        # PROBE_STEPS (150), VS_TIMEOUT (300), TESTS_TIMEOUT (0: no GPU tests)
# 1. bench/mps_probe.py: 4 time-sliced processes against 4 through MPS (training steps only);
# 2. bench/vs_optuna.py, autotune side, on bench/gpu_smoke.yaml with parallel.mps set to whichever won;
# 3. the GPU tests, if TESTS_TIMEOUT > 0.
. bench/device_env.sh /tmp/mps_out
timeout 170 python3 bench/mps_probe.py --procs 4 --steps "${PROBE_STEPS:-150}" --layouts shared mps \
  --out "$OUT/mps_probe.json" 2>&1 | grep -v -i warn | tail -8 | tee "$OUT/mps.log"
MPS=$(python3 -c "
import json, sys
r = {x['layout']: x['steps_per_s'] for x in json.load(open('$OUT/mps_probe.json'))['results']}
print('true' if r.get('mps', 0) > 1.03 * r.get('shared', 0) else 'false')" 2>/dev/null || echo false)
echo "parallel.mps: $MPS"
sed -E "s/(trials_per_gpu: 4)(, mps: (true|false))?}/\1, mps: $MPS}/" bench/gpu_smoke.yaml > /tmp/gpu_smoke_run.yaml
grep parallel /tmp/gpu_smoke_run.yaml
timeout $(( ${VS_TIMEOUT:-300} + 60 )) python3 bench/vs_optuna.py /tmp/gpu_smoke_run.yaml --timeout "${VS_TIMEOUT:-300}" \
  --trials 400 --sides autotune --out "$OUT/vs_autotune.json" 2>&1 | tail -25 | tee "$OUT/vs.log"
if [ "${TESTS_TIMEOUT:-0}" -gt 0 ]; then
  timeout "$TESTS_TIMEOUT" python3 -m pytest -q -m gpu tests/train_tests tests/model_tests tests/scheduler_tests \
    -p no:cacheprovider -o addopts= 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
fi
