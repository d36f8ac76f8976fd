"""How much of the GPU-time of a study goes into training steps, and what Hyperband saves.

Runs real studies of short MoE / sparse-attention trials through ``scheduler.run_study`` (the same
path as ``autotune run``) on every GPU found, then reads the trials back from the store.

  throughput: for each ``--per-gpu K`` a study of ``K * gpus * --trials-per-slot`` fixed-size trials
              (only ``lr`` varies): wall time, GPU busy fraction (summed training-step time over
              slot wall time, and nvidia-smi's utilization), aggregate training tokens/s.
  hyperband:  the same ``--trials``-trial TPE study (same seed) without pruning and with Hyperband:
              best validation loss, and the GPU-seconds spent until a trial first reached the
              unpruned study's best within 1%.

  python bench/study_throughput.py --mode throughput --per-gpu 1 2 4 --out out/study.json
  python bench/study_throughput.py --mode hyperband --trials 24 --out out/hyperband.json
Prints a table; writes JSON. Storage: a fresh SQLite file under --workdir.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import subprocess
import threading
import time
from pathlib import Path

import optuna

from autotune import scheduler, space, store
from autotune.gpus import detect_gpus
from autotune.objective import TrialObjective
from autotune.pruners import build_pruner
from autotune.samplers import build_sampler
from autotune.spec import parse_spec

# Dense attention: the sparse flex-attention backward failed to compile on the device's torch 2.11
# for these shapes (NoValidChoicesError, 2026-11-23); the MoE layers are what these trials exercise.
MODEL = {"d_model": 128, "n_layers": 2, "n_heads": 4, "d_ff": 256, "num_experts": 8, "top_k": 2,
         "attention": "dense", "window": 64, "block_size": 32}


SIZES = {"seq_len": 256, "num_pairs": 16, "batch_size": 64}
TINY = {"seq_len": 32, "num_pairs": 4, "batch_size": 4}      # --tiny: a CPU smoke test of this script


def trainer(steps: int, eval_every: int, compile_: bool) -> dict:
    return {"task": "mqar", **SIZES, "steps": steps, "eval_every": eval_every, "eval_batches": 2,
            "precision": "bf16", "compile": compile_}


class GpuSampler(threading.Thread):
    """nvidia-smi's utilization.gpu (% of time a kernel ran) every 200 ms, all GPUs averaged."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                values = [float(v) for v in out.split()]
                if values:
                    self.samples.append(statistics.fmean(values))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return


def parse(raw: dict, workdir: Path):
    """The spec from a study dict. ``trainer.compile: false`` is set after validation: the spec's
    type check wants the string default 'auto' (reported to the lead)."""
    compile_ = raw["trainer"]["compile"]
    spec = parse_spec({**raw, "trainer": {**raw["trainer"], "compile": "auto"}},
                      base_dir=workdir, default_name=raw["study"])
    trainer_ = tuple((k, compile_ if k == "compile" else v) for k, v in spec.trainer)
    return dataclasses.replace(spec, trainer=trainer_)


def run_one(raw: dict, workdir: Path) -> tuple[optuna.Study, scheduler.RunResult, float | None]:
    spec = parse(raw, workdir)
    storage = store.open_storage(spec.storage)
    study = store.create_or_load_study(
        storage, spec.study, spec.directions,
        sampler=build_sampler(spec.optimizer.kind, seed=spec.optimizer.seed),
        pruner=build_pruner(spec.pruner, spec.trainer_dict.get("steps")))
    sampler = GpuSampler()
    sampler.start()
    result = scheduler.run_study(
        study, storage_url=spec.storage, suggest=lambda t: space.suggest(t, spec.space),
        objective=TrialObjective(spec, spec.storage), parallel=spec.parallel, budget=spec.budget)
    sampler.stop.set()
    util = statistics.fmean(sampler.samples) if sampler.samples else None
    return optuna.load_study(study_name=spec.study, storage=storage), result, util


def trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get("metrics", {})
        step_s = m.get("step_ms", 0.0) * m.get("steps", 0.0) / 1e3
        rows.append({"number": t.number, "state": t.state.name, "gpu": t.user_attrs.get("gpu"),
                     "slot_s": t.user_attrs.get("gpu_seconds", 0.0), "step_s": step_s,
                     "train_s": m.get("train_s", 0.0), "tokens": m.get("tokens_per_s", 0.0) * step_s,
                     "val_loss": m.get("val_loss"), "steps": m.get("steps"),
                     "done": t.datetime_complete.timestamp() if t.datetime_complete else None,
                     "fail_reason": t.user_attrs.get("fail_reason")})
    return rows


def throughput(args: argparse.Namespace, n_gpus: int) -> list[dict]:
    out = []
    for k in args.per_gpu:
        n_trials = k * max(1, n_gpus) * args.trials_per_slot
        raw = {"study": f"throughput-k{k}", "storage": f"sqlite:///{args.workdir}/throughput.db",
               "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}},
               "objectives": [{"metric": "val_loss", "direction": "minimize"}],
               "optimizer": {"kind": "random", "seed": 0}, "pruner": "none",
               "budget": {"trials": n_trials, "timeout": f"{args.study_timeout}s"}, "parallel": {"gpus": "auto", "trials_per_gpu": k},
               "trainer": trainer(args.steps, args.steps, args.compile), "fixed": MODEL}
        study, result, util = run_one(raw, args.workdir)
        rows = trial_rows(study)
        step_s = sum(r["step_s"] for r in rows)
        slot_s = sum(r["slot_s"] for r in rows)
        out.append({
            "trials_per_gpu": k, "gpus": n_gpus, "slots": result.slots, "trials": len(rows),
            "failed": sum(r["state"] == "FAIL" for r in rows), "wall_s": result.wall_s,
            "step_s_sum": round(step_s, 2), "slot_s_sum": round(slot_s, 2),
            # share of each slot's wall time (worker start-up included) spent in training steps
            "busy_of_slot_wall": round(step_s / (result.slots * result.wall_s), 3),
            # share of the time trials held their slot spent in training steps
            "busy_of_trial_time": round(step_s / slot_s, 3) if slot_s else None,
            "nvidia_smi_util_pct": round(util, 1) if util is not None else None,
            "tokens_per_s": round(sum(r["tokens"] for r in rows) / result.wall_s),
            "tokens_per_s_per_trial": round(statistics.fmean(
                r["tokens"] / r["step_s"] for r in rows if r["step_s"])) if step_s else None,
            "fail_reasons": sorted({r["fail_reason"] for r in rows if r["fail_reason"]}),
        })
        print(json.dumps(out[-1]), flush=True)
    return out


def hyperband(args: argparse.Namespace, n_gpus: int) -> list[dict]:
    space_ = {"lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
              "top_k": {"type": "int", "low": 1, "high": 2},
              "num_experts": {"type": "categorical", "choices": [4, 8]},
              "aux_loss_coef": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
              "d_ff": {"type": "categorical", "choices": [128, 256]}}
    fixed = {k: v for k, v in MODEL.items() if k not in space_}
    out, best_unpruned = [], None
    for pruner in ("none", "hyperband"):
        raw = {"study": f"hb-{pruner}", "storage": f"sqlite:///{args.workdir}/hyperband.db",
               "space": space_, "objectives": [{"metric": "val_loss", "direction": "minimize"}],
               "optimizer": {"kind": "tpe", "seed": 0},
               "pruner": "none" if pruner == "none" else
               {"kind": "hyperband", "min_steps": args.steps // 9, "reduction_factor": 3},
               "budget": {"trials": args.trials, "timeout": f"{args.study_timeout}s"},
               "parallel": {"gpus": "auto", "trials_per_gpu": args.hb_per_gpu},
               "trainer": trainer(args.steps, max(1, args.steps // 9), args.compile),
               "fixed": fixed}
        study, result, _ = run_one(raw, args.workdir)
        rows = sorted((r for r in trial_rows(study) if r["done"]), key=lambda r: r["done"])
        complete = [r for r in rows if r["state"] == "COMPLETE" and r["val_loss"] is not None]
        best = min(r["val_loss"] for r in complete)
        if best_unpruned is None:
            best_unpruned = best
        spent, to_target = 0.0, None
        for r in rows:   # GPU-seconds in order of completion until the target is first reached
            spent += r["slot_s"]
            if to_target is None and r["state"] == "COMPLETE" and r["val_loss"] <= best_unpruned * 1.01:
                to_target = spent
        out.append({"pruner": pruner, "trials": len(rows), "wall_s": result.wall_s,
                    "complete": len(complete), "pruned": sum(r["state"] == "PRUNED" for r in rows),
                    "failed": sum(r["state"] == "FAIL" for r in rows),
                    "best_val_loss": round(best, 4),
                    "gpu_s_total": round(sum(r["slot_s"] for r in rows), 1),
                    "gpu_s_to_unpruned_best_within_1pct":
                        round(to_target, 1) if to_target is not None else None})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["throughput", "hyperband"], default="throughput")
    ap.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--trials-per-slot", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--hb-per-gpu", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile each trial's model")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/study_throughput"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--study-timeout", type=int, default=3600,
                    help="seconds: each study stops handing out trials after this")
    ap.add_argument("--tiny", action="store_true", help="tiny model and batches (CPU smoke test)")
    args = ap.parse_args()
    if args.tiny:
        SIZES.update(TINY)
        MODEL.update(d_model=32, d_ff=64, window=16, block_size=8)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    gpus = detect_gpus()
    started = time.time()
    rows = throughput(args, len(gpus)) if args.mode == "throughput" else hyperband(args, len(gpus))
    report = {"mode": args.mode, "gpus": gpus, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows, "seconds": round(time.time() - started, 1)}
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
