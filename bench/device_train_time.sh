#!/usr/bin/env bash
# Device machine, issue 15: where a trial's GPU time goes, end to end through `autotune run`.
#   PART=tests  bash bench/device_train_time.sh   # the GPU tests only
#   PART=check  bash bench/device_train_time.sh   # GPU tests (no recompiles, no unfused fallback), then
#                                                 # a short gpu_smoke run with its per-trial split
#   PART=vs     bash bench/device_train_time.sh   # bench/vs_optuna.py on bench/gpu_smoke.yaml, VS_TIMEOUT s a side
#                                                 # (VS_SIDES="autotune" or "plain": one side a call;
#                                                 #  VS_TRIALS: autotune's --trials, 100 as in the issue)
#   PART=moe    bash bench/device_train_time.sh   # studies/moe_sparse.yaml for MOE_TIMEOUT, SM utilisation alongside
#   PART=start  bash bench/device_train_time.sh   # bench/gpu_smoke.yaml twice, a trial a slot each time: launch
#                                                 # to each slot's first training step, cold machine then warm
#   PART=ahead  bash bench/device_train_time.sh   # the helper-process compile: its GPU test, then
#                                                 # bench/compile_ahead.py (eager / foreground / ahead / ahead-warm;
#                                                 #  AHEAD_VARIANTS picks some), the helper's phases
# Optuna, SQLAlchemy & co. travel as wheels in .whl (carry it; bench/device_env.sh says how to fill it).
. bench/device_env.sh /tmp/train_time_out
PART=${PART:-check}
split() {  # split DB STUDY [LAUNCHED_EPOCH]: per-trial time_s and the study's share of slot time in training steps
  python3 - "$@" <<'PY'
import sys, statistics, optuna
study = optuna.load_study(study_name=sys.argv[2], storage=f"sqlite:///{sys.argv[1]}")
rows, first = [], {}
for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_start.timestamp() if t.datetime_start else 0):
    ts = t.user_attrs.get("time_s") or {}
    if not ts:
        continue
    slot = t.user_attrs.get("slot"); first.setdefault(slot, t.number)
    c = t.user_attrs.get("compile") or {}
    m = t.user_attrs.get("metrics") or {}
    if t.state.name in ("COMPLETE", "PRUNED"):     # finished; trials cut by the timeout are rerun later
        rows.append((t.number, first[slot] == t.number, ts))
    print(t.number, t.state.name, t.params.get("attention"), "val_loss=%s acc=%s" % (m.get("val_loss"), m.get("accuracy")),
          "compiled" if c.get("compiled") else "eager", {k: round(v, 2) for k, v in ts.items()}, "|", c.get("reason", "")[:160],
          {k: c[k] for k in ("ahead", "ahead_s", "ahead_phases", "ahead_helper", "compile_s", "load_s",
                             "eager_step_ms", "compiled_step_ms") if k in c},
          t.user_attrs.get("fail_reason") or t.system_attrs.get("fail_reason") or "")
later = [ts for n, f, ts in rows if not f]
for name, group in (("finished trials", [ts for _, _, ts in rows]), ("finished, after each slot's first", later)):
    total = sum(ts["total"] for ts in group)
    if total:
        parts = {k: round(sum(ts.get(k, 0) for ts in group) / total, 3) for k in sorted({k for ts in group for k in ts}) if k != "total"}
        print(f"{name}: {len(group)} trials, share in training steps {parts.get('train', 0):.3f}; shares {parts}")
if later:
    print("median overhead after each slot's first (s):", round(statistics.median(ts["total"] - ts.get("train", 0) for ts in later), 2))
if len(sys.argv) > 3:   # the run's launch (epoch s): when each slot's first trial took its first step
    launched, firsts = float(sys.argv[3]), {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_start.timestamp() if t.datetime_start else 0):
        if t.datetime_start and t.datetime_start.timestamp() >= launched and t.user_attrs.get("time_s"):
            firsts.setdefault(t.user_attrs.get("slot"), t)
    for t in firsts.values():
        ts = t.user_attrs["time_s"]
        at = t.datetime_start.timestamp() + sum(ts.get(k, 0) for k in ("handoff", "worker_start", "setup"))
        print(f"slot {t.user_attrs.get('slot')}: trial {t.number} started {t.datetime_start.timestamp() - launched:.1f} s "
              f"after the launch, first training step at {at - launched:.1f} s")
PY
}
if [ "$PART" = tests ]; then
  python3 -m pytest -q -m gpu tests/train_tests tests/model_tests -p no:cacheprovider -o addopts= 2>&1 | tee "$OUT/gpu_tests.log"
fi
if [ "$PART" = check ]; then
  python3 -m pytest -q -m gpu tests/train_tests tests/model_tests -p no:cacheprovider -o addopts= -x 2>&1 | tee "$OUT/gpu_tests.log"
  rm -rf /tmp/gpu_smoke.db* /tmp/gpu_smoke.db-compile-cache
  ( nvidia-smi dmon -s u -d 1 > "$OUT/smoke_dmon.log" & echo $! > /tmp/dmon.pid )
  L=$(date +%s.%N)
  TORCH_LOGS=recompiles timeout 400 python3 -m autotune run bench/gpu_smoke.yaml --timeout "${SMOKE_TIMEOUT:-150}s" --hard-stop --no-live 2>&1 | tail -40 | tee "$OUT/smoke.log"
  kill "$(cat /tmp/dmon.pid)"
  split /tmp/gpu_smoke.db gpu-smoke "$L" | tee "$OUT/smoke_split.log"
  awk '$1 ~ /^[0-9]+$/ {s += $2; n++} END {if (n) print "mean SM util %:", s / n}' "$OUT/smoke_dmon.log"
fi
if [ "$PART" = vs ]; then
  python3 bench/vs_optuna.py bench/gpu_smoke.yaml --timeout "${VS_TIMEOUT:-270}" --trials "${VS_TRIALS:-100}" --sides ${VS_SIDES:-autotune plain} \
    --out "$OUT/vs_optuna.json" 2>&1 | tee "$OUT/vs.log"
fi
if [ "$PART" = ahead ]; then
  python3 -m pytest -q -m gpu tests/train_tests/test_compile_gpu.py -k ahead -p no:cacheprovider -p no:logging \
    --tb=short -o addopts= 2>&1 | tail -40 | tee "$OUT/ahead_test.log"
  timeout 480 python3 bench/compile_ahead.py --steps "${AHEAD_STEPS:-600}" --variants ${AHEAD_VARIANTS:-eager foreground ahead ahead-warm} \
    --out "$OUT/compile_ahead.json" 2>&1 \
    | grep -v '^{' | tee "$OUT/compile_ahead.log"
fi
if [ "$PART" = start ]; then   # issue 15 item 4: a warm machine's run, launch to each slot's first step
  rm -rf /tmp/start.db*
  stamp() {   # each line with the seconds since $1
    python3 -u -c 'import sys, time
t0 = float(sys.argv[1])
for line in sys.stdin: print(f"{time.time() - t0:6.2f} {line}", end="", flush=True)' "$1"; }
  n=0
  for run in cold warm; do       # the first run warms the page cache and the compile caches
    n=$((n + 4))                 # one trial a slot (4 slots), each run to the end
    ( nvidia-smi dmon -s u -d 1 > "$OUT/start_${run}_dmon.log" & echo $! > /tmp/dmon.pid )
    L=$(date +%s.%N)
    timeout 240 python3 -m autotune -v run bench/gpu_smoke.yaml --storage sqlite:////tmp/start.db \
      --trials "$n" --no-live 2>&1 | stamp "$L" | grep -v ' step \|Experimental\|set_metric' > "$OUT/start_$run.log"
    kill "$(cat /tmp/dmon.pid)"
    echo "== $run run" | tee -a "$OUT/start_split.log"
    grep -v '[│┌└┏┡┗┃]' "$OUT/start_$run.log" | tee -a "$OUT/start_split.log"   # the timeline, not the tables
    split /tmp/start.db gpu-smoke "$L" | grep '^slot\|^[0-9]* COMPLETE' | tee -a "$OUT/start_split.log"
    awk '$1 ~ /^[0-9]+$/ {n++; if ($2 >= 50) {print "first dmon second with SM >= 50 %:", n; exit}}' \
      "$OUT/start_${run}_dmon.log" | tee -a "$OUT/start_split.log"
  done
fi
if [ "$PART" = moe ]; then
  rm -rf /tmp/moe_sparse.db*
  ( nvidia-smi dmon -s u -d 1 > "$OUT/moe_dmon.log" & echo $! > /tmp/dmon.pid )
  L=$(date +%s.%N)
  timeout 590 python3 -m autotune run studies/moe_sparse.yaml --storage sqlite:////tmp/moe_sparse.db \
    --timeout "${MOE_TIMEOUT:-500}s" --hard-stop --no-live 2>&1 | tail -20 | tee "$OUT/moe.log"
  kill "$(cat /tmp/dmon.pid)"
  split /tmp/moe_sparse.db moe-sparse "$L" | tee "$OUT/moe_split.log"
  awk '$1 ~ /^[0-9]+$/ {s += $2; n++} END {if (n) print "mean SM util %:", s / n}' "$OUT/moe_dmon.log"
fi
