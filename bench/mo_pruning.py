"""Multi-objective pruning against no pruning: compute saved and Pareto quality kept (issue 19 item 4).

The same two-objective study (minimize ``val_loss`` and ``latency_ms``) runs once per rule and
seed through autotune's own path: ``study.prepare`` + ``study.run`` (the scheduler, its worker
processes, the objective bridge that judges stored curves), as ``autotune run`` does, on the CPU.
The objective is ``_mo_curves.learning_curve``: seeded synthetic learning curves
``a + b * step^-c`` whose ``a, b, c`` and ``latency_ms`` the configuration fixes, reported every
``--eval-every`` steps, with a fixed amount of arithmetic per step, so compute is counted in steps.

Rules: ``none``; ``median`` on ``val_loss`` (autotune's named-metric rule); ``percentile-75`` on
``val_loss`` (the same rule, pruning only the worst quarter); ``pareto`` (the rung-wise Pareto rule
on both objectives, its default ``dominated_by: 0.25``). These are the rules autotune accepts for
several objectives. Every rule of a seed has the same sampler seed and the same noise and the
same trial budget (COMPLETE + PRUNED trials).

Per run: steps trained (all trials, pruned ones up to where they stopped), hypervolume of the
COMPLETE trials' Pareto front (objectives scaled by fixed bounds to [0, 1], reference point
(1, 1); ``autotune._optuna.hypervolume``), that hypervolume as a share of the true front's (dense
noise-free sampling of the family), wall time, the low-latency end (the fastest COMPLETE trial's
``latency_ms``; the share of pruned trials faster than ``FAST_MS``); and for ``none`` the hypervolume it had reached
when it had trained as many steps as each pruned run (equal compute rather than equal trials).

    python bench/mo_pruning.py --quick --out /tmp/mo_pruning.json     # about 2 minutes on 2 cores
    python bench/mo_pruning.py --seeds 5 --trials 60 --out /tmp/mo_pruning.json
Prints a table; writes JSON.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))   # this checkout's autotune
sys.path.insert(0, str(BENCH))          # _mo_curves, for this process and the workers it spawns

import argparse
import datetime
import json
import logging
import platform
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import optuna

import _mo_curves as curves
from autotune import _optuna
from autotune import study as study_mod
from autotune.spec import parse_spec

OBJECTIVES = [{"metric": "val_loss", "direction": "minimize"},
              {"metric": "latency_ms", "direction": "minimize"}]
# Fixed scaling for the hypervolume: (value - LOW) / (REFERENCE - LOW) per objective, reference (1, 1).
LOW = np.array([1.0, 0.0])
REFERENCE = np.array([4.0, 20.0])
RULES = {"none": None,
         "median": {"kind": "median", "metric": "val_loss"},
         "percentile-75": {"kind": "percentile", "percentile": 75.0, "metric": "val_loss"},
         "pareto": {"kind": "pareto"}}   # rung-wise Pareto on both objectives, default dominated_by
FAST_MS = 2.0   # latency_ms below which a trial counts as the front's low-latency end
PRESETS = {"quick": {"seeds": 3, "trials": 30, "steps": 200, "eval_every": 10, "work_units": 20},
           "full": {"seeds": 5, "trials": 60, "steps": 300, "eval_every": 10, "work_units": 20}}


def scaled(points: np.ndarray) -> np.ndarray:
    return (np.asarray(points, dtype=float) - LOW) / (REFERENCE - LOW)


def hypervolume(points: Any) -> float:
    """Hypervolume of (val_loss, latency_ms) points, scaled, against (1, 1); 0 for none inside."""
    pts = scaled(np.asarray(points, dtype=float).reshape(-1, 2))
    pts = pts[np.all(pts < 1.0, axis=1)]
    return _optuna.hypervolume(pts, np.ones(2)) if len(pts) else 0.0


def true_hypervolume(steps: int, samples: int = 200_000) -> float:
    """The family's best attainable hypervolume at ``steps``: noise-free final values of dense
    random configurations (a fixed sample, independent of the study seeds)."""
    rng = np.random.default_rng(20261205)
    width = np.round(np.exp(rng.uniform(np.log(64), np.log(1024), samples)))
    depth = rng.integers(2, 13, samples)
    lr = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), samples))
    dropout = rng.uniform(0.0, 0.5, samples)
    a, b, c = curves.curve_params(width, depth, lr, dropout)
    points = np.column_stack([a + b * steps ** -c, curves.latency_ms(width, depth)])
    return hypervolume(_front(points))


def _front(points: np.ndarray) -> np.ndarray:
    """The non-dominated rows of ``points`` (both minimized)."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    kept, best_latency = [], np.inf
    for i in order:
        if points[i, 1] < best_latency:
            kept.append(i)
            best_latency = points[i, 1]
    return points[kept]


def study_raw(args: argparse.Namespace, rule: str, seed: int, storage: str) -> dict:
    pruner = RULES[rule]
    if pruner is not None:
        pruner = {**pruner, "startup_trials": args.startup_trials, "min_steps": args.min_steps,
                  "interval_steps": args.eval_every}
    return {"study": f"mo-{rule}-s{seed}", "storage": storage, "space": curves.SPACE,
            "objectives": OBJECTIVES, "objective": "_mo_curves:learning_curve",
            "optimizer": {"kind": args.optimizer, "seed": seed},
            "pruner": pruner or "none", "budget": {"trials": args.trials},
            "parallel": {"gpus": 0, "workers": args.workers},
            "trainer": {"steps": args.steps, "eval_every": args.eval_every,
                        "work_units": args.work_units},
            "fixed": {"noise_seed": seed}}


def run_one(args: argparse.Namespace, rule: str, seed: int, workdir: Path) -> dict:
    """One study, as ``autotune run`` assembles and runs it; what its trials cost and found."""
    raw = study_raw(args, rule, seed, f"sqlite:///{workdir / f'mo-{rule}-s{seed}.db'}")
    spec = parse_spec(raw, base_dir=BENCH, default_name=raw["study"])
    started = time.perf_counter()
    study = study_mod.prepare(spec)
    result = study_mod.run(spec, study)
    wall_s = time.perf_counter() - started   # assembly, scheduler, workers, trials
    trials = sorted(optuna.load_study(study_name=spec.study, storage=spec.storage).get_trials(deepcopy=False),
                    key=lambda t: t.datetime_complete or t.datetime_start)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                 optuna.trial.TrialState.PRUNED)]
    steps = [int(t.user_attrs.get("metrics", {}).get("steps_trained", 0)) for t in finished]
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    # (cumulative steps when the trial finished, its values or None when pruned): in finishing order
    timeline = [(int(np.sum(steps[:i + 1])), t.values if t.state == optuna.trial.TrialState.COMPLETE else None)
                for i, t in enumerate(finished)]
    latency = [curves.latency_ms(t.params["width"], t.params["depth"]) for t in finished]
    pruned_ms = [ms for ms, t in zip(latency, finished) if t.state == optuna.trial.TrialState.PRUNED]
    return {"rule": rule, "seed": seed, "trials": len(finished), "complete": len(complete),
            "fastest_complete_ms": min((t.values[1] for t in complete), default=None),
            "pruned_fast_share": (sum(ms < FAST_MS for ms in pruned_ms) / len(pruned_ms)) if pruned_ms else 0.0,
            "pruned": len(finished) - len(complete), "failed": result.failed,
            "steps": int(sum(steps)), "hv": hypervolume([t.values for t in complete]),
            "front_size": len(_front(np.array([t.values for t in complete]))) if complete else 0,
            "wall_s": round(wall_s, 3), "timeline": timeline}


def hv_at_steps(timeline: list, budget: int) -> float:
    """Hypervolume of the trials that had finished within ``budget`` steps."""
    return hypervolume([v for spent, v in timeline if spent <= budget and v is not None])


def summarize(runs: list[dict], rules: list[str], hv_true: float) -> dict:
    by = {(r["rule"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    summary = {}
    for rule in rules:
        rows = [by[rule, s] for s in seeds]
        base = [by["none", s] for s in seeds] if "none" in rules else None
        out = {"steps": _stats([r["steps"] for r in rows]),
               "hv": _stats([r["hv"] for r in rows]),
               "hv_of_true": _stats([r["hv"] / hv_true for r in rows]),
               "wall_s": _stats([r["wall_s"] for r in rows]),
               "pruned": _stats([r["pruned"] for r in rows]),
               "fastest_complete_ms": _stats([r["fastest_complete_ms"] for r in rows
                                              if r["fastest_complete_ms"] is not None]),
               "pruned_fast_share": _stats([r["pruned_fast_share"] for r in rows])}
        if base is not None:
            out["steps_vs_none"] = _stats([r["steps"] / b["steps"] for r, b in zip(rows, base)])
            out["hv_vs_none"] = _stats([r["hv"] / b["hv"] for r, b in zip(rows, base)])
            out["wall_vs_none"] = _stats([r["wall_s"] / b["wall_s"] for r, b in zip(rows, base)])
            # none stopped at the steps this rule trained: equal compute instead of equal trials
            out["none_hv_at_equal_steps"] = _stats([hv_at_steps(b["timeline"], r["steps"])
                                                    for r, b in zip(rows, base)])
            out["hv_vs_none_at_equal_steps"] = _stats(
                [r["hv"] / max(hv_at_steps(b["timeline"], r["steps"]), 1e-12) for r, b in zip(rows, base)])
        summary[rule] = out
    return summary


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def print_table(summary: dict, hv_true: float) -> None:
    print(f"\nHV: scaled hypervolume of the COMPLETE trials' front (true front {hv_true:.4f}); "
          "mean ± sd over seeds [min, max]")
    header = (f"{'rule':<14} {'steps':>14} {'steps/none':>18} {'pruned':>7} {'HV':>16} {'HV/none':>22} "
              f"{'HV/none @=steps':>22} {'wall s':>12} {'wall/none':>10} {'fastest ms':>12} "
              f"{'pruned fast':>11}")
    print(header)
    print("-" * len(header))
    for rule, s in summary.items():
        def ms(key, fmt=".3f"):
            v = s.get(key)
            return "-" if v is None else f"{v['mean']:{fmt}} ± {v['sd']:{fmt}}"

        def rng(key):
            v = s.get(key)
            return "" if v is None else f" [{v['min']:.2f},{v['max']:.2f}]"
        print(f"{rule:<14} {ms('steps', '.0f'):>14} {ms('steps_vs_none', '.2f') + rng('steps_vs_none'):>18} "
              f"{s['pruned']['mean']:>7.1f} {ms('hv', '.4f'):>16} "
              f"{ms('hv_vs_none', '.3f') + rng('hv_vs_none'):>22} "
              f"{ms('hv_vs_none_at_equal_steps', '.3f') + rng('hv_vs_none_at_equal_steps'):>22} "
              f"{ms('wall_s', '.1f'):>12} {ms('wall_vs_none', '.2f'):>10} "
              f"{ms('fastest_complete_ms', '.2f'):>12} {s['pruned_fast_share']['mean']:>11.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"preset {PRESETS['quick']}")
    p.add_argument("--seeds", type=int)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--trials", type=int, help="trial budget (COMPLETE + PRUNED) of every study")
    p.add_argument("--steps", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--work-units", type=int, help="64x64 matrix products per step (fixed work)")
    p.add_argument("--rules", default=",".join(RULES), help=f"comma-separated of {', '.join(RULES)}")
    p.add_argument("--optimizer", default="tpe")
    p.add_argument("--startup-trials", type=int, default=5)
    p.add_argument("--min-steps", type=int, help="no pruning before (default steps / 5)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--out", type=Path, default=Path("mo_pruning.json"))
    args = p.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.min_steps is None:
        args.min_steps = max(args.eval_every, args.steps // 5 // args.eval_every * args.eval_every)
    args.rules = [r for r in args.rules.split(",") if r]
    unknown = set(args.rules) - set(RULES)
    if unknown:
        p.error(f"unknown rules {sorted(unknown)}; choose from {', '.join(RULES)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("autotune").setLevel(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mo_pruning-"))
    workdir.mkdir(parents=True, exist_ok=True)
    hv_true = true_hypervolume(args.steps)
    # a throwaway study first, so that no rule's wall time pays for cold imports and caches
    run_one(argparse.Namespace(**{**vars(args), "trials": 2}), "none", 999_999, workdir)
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for rule in args.rules:
            run = run_one(args, rule, seed, workdir)
            runs.append(run)
            print(f"seed {seed} {rule:<14} trials {run['trials']} pruned {run['pruned']:>3} "
                  f"steps {run['steps']:>6} HV {run['hv']:.4f} wall {run['wall_s']:.1f} s", flush=True)
    summary = summarize(runs, args.rules, hv_true)
    print_table(summary, hv_true)
    report = {"command": " ".join(sys.argv), "date": datetime.date.today().isoformat(),
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "optuna": optuna.__version__},
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "scaling": {"low": LOW.tolist(), "reference": REFERENCE.tolist()},
              "hv_true": hv_true, "runs": runs, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
