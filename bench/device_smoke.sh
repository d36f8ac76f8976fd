#!/usr/bin/env bash
# Device machine: `autotune run bench/gpu_smoke.yaml` end to end, then the study as exported JSON.
# Optuna, SQLAlchemy, DEAP travel as wheels in .whl (carry it).
. bench/device_env.sh /tmp/smoke_out
rm -f /tmp/gpu_smoke.db*
time python3 -m autotune run bench/gpu_smoke.yaml --no-live 2>&1 | tee "$OUT/run.log"
python3 -m autotune export gpu-smoke --storage sqlite:////tmp/gpu_smoke.db --format json --out "$OUT/trials.json"
python3 - "$OUT/trials.json" <<'PY'
import json, sys
for t in json.load(open(sys.argv[1])):
    m = t["user_attrs"].get("metrics", {})
    print(t["number"], t["state"], t["user_attrs"].get("gpu"), t["user_attrs"].get("fail_reason", "")[:200],
          {k: m.get(k) for k in ("val_loss", "accuracy", "tokens_per_s", "step_ms", "peak_mem_mb", "mfu", "keep_ratio_used")})
PY
