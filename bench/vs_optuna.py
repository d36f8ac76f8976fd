"""autotune against what a user writes without it, on one machine, the same study file (issue 15).

Side A, "plain": ``optuna.Study.optimize`` in one process, eager, with the study's own space, trainer,
pruner and Optuna's default sampler (TPE): the loop a user writes in ten lines. Side B: ``autotune
run FILE --trials N --timeout T`` (the study's optimizer, slots, compile policy). Each side gets
the same wall time; the table shows trials finished, the share of slot time in training steps
(from each trial's ``time_s``), the median per-trial overhead (slot time minus training steps)
after each slot's first trial, and GPU utilisation sampled by nvidia-smi once a second.

    python bench/vs_optuna.py bench/gpu_smoke.yaml --timeout 300 --out out/vs_optuna.json
    python bench/vs_optuna.py bench/gpu_smoke.yaml --timeout 300 --sides autotune   # one side only
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class GpuSampler:
    """Mean GPU utilisation (%) from nvidia-smi, sampled once a second in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples += [float(x) for x in out.split()]
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(1.0)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def summarize(rows: list[dict], wall_s: float, window_s: float) -> dict:
    """rows: one per trial, ``slot`` (a slot id), ``start`` and ``end`` (s since the side began),
    ``total_s``, ``train_s``. ``trials_finished`` counts those finished (complete or pruned) within
    ``window_s``: Optuna's timeout lets the trial in flight finish after it, autotune's
    ``--hard-stop`` cuts its trials at it, so both are counted in the same window."""
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["end"] <= window_s]
    first_of_slot = {}
    for r in sorted(rows, key=lambda r: r["start"]):
        first_of_slot.setdefault(r["slot"], r["number"])
    later = [r for r in rows if first_of_slot.get(r["slot"]) != r["number"]]
    total = sum(r["total_s"] for r in rows)
    return {"trials_finished": len(finished), "trials_complete": sum(r["state"] == "COMPLETE" for r in finished),
            # what the GPU did, whatever the sampler chose and the pruner cut: training steps and
            # tokens of the trials finished in the window, per second of the window
            "steps_per_s": round(sum(r.get("steps", 0.0) for r in finished) / window_s, 2),
            "tokens_per_s": round(sum(r.get("tokens", 0.0) for r in finished) / window_s),
            "finished_after_window": sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows) - len(finished),
            "wall_s": round(wall_s, 1),
            "share_in_steps": round(sum(r["train_s"] for r in rows) / total, 4) if total else None,
            "median_overhead_s_after_first": round(statistics.median(r["total_s"] - r["train_s"] for r in later), 2)
            if later else None,
            "best": min((r["value"] for r in rows if r.get("value") is not None), default=None),
            "split_s": {k: round(sum(r["parts"].get(k, 0.0) for r in rows), 1)
                        for k in sorted({k for r in rows for k in r["parts"]})}}


def run_plain(study_file: Path, timeout_s: float) -> dict:
    """What a user writes: one process, study.optimize, the same space and trainer, eager."""
    import optuna

    from autotune import space as space_mod
    from autotune.model.config import ModelConfig
    from autotune.pruners import build_pruner
    from autotune.spec import load_spec
    from autotune.train import TrainConfig, train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(str(study_file))
    metric = spec.metrics[0]
    study = optuna.create_study(direction=spec.directions[0],
                                pruner=build_pruner(spec.pruner, spec.trainer_dict.get("steps")))
    model_names, train_names = ModelConfig.field_names(), TrainConfig.field_names()
    rows: list[dict] = []
    t0 = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        params = {**spec.trainer_dict, **spec.fixed_dict, **space_mod.suggest(trial, spec.space), "compile": False}
        pruned = False

        def report(step, metrics):
            nonlocal pruned
            trial.report(metrics[metric], step)
            pruned = trial.should_prune()
            return not pruned

        row = {"number": trial.number, "slot": 0, "start": started - t0, "state": "FAIL", "value": None,
               "train_s": 0.0, "parts": {}}
        rows.append(row)
        try:
            m = train(ModelConfig(**{k: v for k, v in params.items() if k in model_names}),
                      TrainConfig(**{k: v for k, v in params.items() if k in train_names}), report)
            row.update(train_s=m["time_s"]["train"], parts=m["time_s"], steps=m.get("steps", 0.0),
                       tokens=m.get("tokens_per_s", 0.0) * m["time_s"]["train"])
            if pruned:
                row["state"] = "PRUNED"
                raise optuna.TrialPruned()
            row.update(state="COMPLETE", value=m[metric])
            return m[metric]
        finally:
            row["total_s"] = time.perf_counter() - started
            row["end"] = time.perf_counter() - t0

    with GpuSampler() as gpu:
        study.optimize(objective, timeout=timeout_s, catch=(Exception,))
    out = summarize(rows, time.perf_counter() - t0, timeout_s)
    out["gpu_util_pct"] = gpu.mean
    return out


def run_autotune(study_file: Path, timeout_s: float, trials: int, workdir: Path, log: Path) -> dict:
    import optuna

    db = workdir / "vs_optuna.db"
    url = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "autotune", "run", str(study_file), "--storage", url,
           "--trials", str(trials), "--timeout", f"{int(timeout_s)}s", "--hard-stop", "--no-live"]
    t0, began = time.perf_counter(), time.time()
    with GpuSampler() as gpu:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + proc.stderr)
    from autotune.spec import load_spec
    study = optuna.load_study(study_name=load_spec(str(study_file)).study, storage=url)
    rows = []
    for t in study.get_trials(deepcopy=False):
        parts = t.user_attrs.get("time_s") or {}
        metrics = t.user_attrs.get("metrics") or {}
        if not parts or t.datetime_start is None:
            continue
        rows.append({"number": t.number, "slot": t.user_attrs.get("slot"), "state": t.state.name,
                     "start": t.datetime_start.timestamp() - began, "total_s": parts.get("total", 0.0),
                     "end": t.datetime_complete.timestamp() - began if t.datetime_complete else math.inf,
                     "train_s": parts.get("train", 0.0), "parts": parts,
                     "steps": metrics.get("steps", 0.0),
                     "tokens": metrics.get("tokens_per_s", 0.0) * parts.get("train", 0.0),
                     "value": t.values[0] if t.values else None,
                     "compiled": (t.user_attrs.get("compile") or {}).get("compiled")})
    out = summarize(rows, wall, timeout_s)
    out.update(gpu_util_pct=gpu.mean, exit_code=proc.returncode,
               compiled_trials=sum(bool(r["compiled"]) for r in rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds each side runs")
    ap.add_argument("--trials", type=int, default=100, help="autotune's --trials (the budget cap)")
    ap.add_argument("--sides", nargs="+", default=["autotune", "plain"], choices=["autotune", "plain"])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "vs_optuna.json")
    args = ap.parse_args()
    results = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sides:
            print(f"== {side}: {args.study} for {args.timeout:.0f} s", flush=True)
            results[side] = (run_plain(args.study.resolve(), args.timeout) if side == "plain"
                             else run_autotune(args.study.resolve(), args.timeout, args.trials, Path(tmp),
                                               args.out.with_suffix(".autotune.log")))
            print(json.dumps(results[side]), flush=True)
    cols = ["trials_finished", "trials_complete", "steps_per_s", "tokens_per_s", "share_in_steps",
            "median_overhead_s_after_first", "gpu_util_pct", "best"]
    print("\n| side | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for side, r in results.items():
        print(f"| {side} | " + " | ".join(str(r.get(c)) for c in cols) + " |")
    if "plain" in results and "autotune" in results and results["plain"]["trials_finished"]:
        print(f"\nautotune / plain trials finished: "
              f"{results['autotune']['trials_finished'] / results['plain']['trials_finished']:.2f}x")
    args.out.write_text(json.dumps({"study": str(args.study), "timeout_s": args.timeout, **results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
