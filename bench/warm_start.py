"""Benchmark: does a warm start from an earlier, related study find good configurations sooner?

For each pair (source problem -> target problem) and each seed: a source study runs TPE for
``--source-trials`` trials on the source problem; then on the target problem a cold study and one
warm study per strategy (``enqueue``, ``prior``, ``local``) each run ``--trials`` trials with the
same seed.
Pairs: the target is the source shifted (a little, more), rescaled (with a shrunk range), a mixed
int/categorical space that changed (new parameter, removed parameter and choice, int on a step),
two *unrelated* sources (optimum in the opposite corner; a sphere centred at random per seed)
where warm must not be worse than cold beyond noise, and one *deceptive* source (its optimum is the
target's worst local minimum), a stress case that no warm start that trusts its source can pass.

Metrics per pair and strategy, over seeds:
- ``reach``: trials a warm study needs to reach the best value the cold study of the same seed
  reached in ``--trials`` trials (``>N`` when it never does); median over seeds (target <= 15),
- ``best@N``: median best value after ``--trials`` trials, and the paired difference warm - cold
  with a bootstrap 95% interval (an interval wholly above 0 means worse beyond noise).

    python bench/warm_start.py --seeds 20 --trials 50 --json bench/warm_start.json
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import optuna

from autotune import space, warmstart
from autotune.spec_types import (ObjectiveSpec, OptimizerSpec, Param, SearchSpace, StudySpec,
                                 WarmStartSpec)

from autotune.samplers import build_sampler

Objective = Callable[[dict[str, Any]], float]


# ---- problems -------------------------------------------------------------------------------

def _floats(names: str, low: float, high: float) -> tuple[Param, ...]:
    return tuple(Param(n, "float", low=low, high=high) for n in names.split())


def sphere(center: tuple[float, ...]) -> Objective:
    return lambda p: float(sum((p[f"x{i}"] - c) ** 2 for i, c in enumerate(center)))


def styblinski_tang(scale: float = 1.0, offset: float = 0.0) -> Objective:
    """Minimum -39.17 per dimension at x = -2.90 (a worse local minimum at +2.75)."""
    def f(p: dict[str, Any]) -> float:
        x = np.array([p[f"x{i}"] for i in range(4)])
        return float(scale * 0.5 * np.sum(x ** 4 - 16 * x ** 2 + 5 * x) + offset)
    return f


def mixed(lr: float, layers: int, act: str, extra: dict[str, float]) -> Objective:
    def f(p: dict[str, Any]) -> float:
        v = (math.log10(p["lr"]) - math.log10(lr)) ** 2 + ((p["layers"] - layers) / 4) ** 2
        v += 0.0 if p["act"] == act else 0.5
        return float(v + sum(4 * (p[k] - x) ** 2 for k, x in extra.items()))
    return f


MIXED_SOURCE = SearchSpace((
    Param("lr", "float", low=1e-5, high=1e-1, log=True), Param("layers", "int", low=1, high=12),
    Param("act", "categorical", choices=("relu", "gelu", "silu")),
    Param("dropout", "float", low=0.0, high=0.5)))
MIXED_TARGET = SearchSpace((    # dropout removed, wd new, relu gone, layers on a step of 2
    Param("lr", "float", low=1e-5, high=1e-1, log=True),
    Param("layers", "int", low=2, high=16, step=2),
    Param("act", "categorical", choices=("gelu", "silu", "swish")),
    Param("wd", "float", low=0.0, high=0.1)))
SPACE4 = SearchSpace(_floats("x0 x1 x2 x3", -5.0, 5.0))
SPACE4_NARROW = SearchSpace(_floats("x0 x1 x2 x3", -4.0, 4.0))
TARGET_CENTER = (1.5, -1.5, 2.5, 0.0)


def random_sphere(seed: int) -> Objective:
    """A source unrelated to any target: a sphere centred anywhere in the box (drawn per seed)."""
    center = np.random.default_rng(1_000 + seed).uniform(-5.0, 5.0, size=4)
    return sphere(tuple(float(c) for c in center))


@dataclass(frozen=True)
class Pair:
    name: str
    source_space: SearchSpace
    source: Objective | Callable[[int], Objective]
    target_space: SearchSpace
    target: Objective
    kind: str = "related"            # related | unrelated | deceptive
    source_per_seed: bool = False    # `source` is a function of the seed

    def source_for(self, seed: int) -> Objective:
        return self.source(seed) if self.source_per_seed else self.source


PAIRS = (
    Pair("sphere4-shift0.2", SPACE4, sphere((1.3, -1.3, 2.3, 0.2)), SPACE4, sphere(TARGET_CENTER)),
    Pair("sphere4-shift0.5", SPACE4, sphere((1.0, -1.0, 2.0, 0.5)), SPACE4, sphere(TARGET_CENTER)),
    Pair("styblinski4-rescaled", SPACE4, styblinski_tang(),
         SPACE4_NARROW, styblinski_tang(scale=2.0, offset=300.0)),
    Pair("mixed-space-changed", MIXED_SOURCE, mixed(3e-3, 6, "gelu", {"dropout": 0.1}),
         MIXED_TARGET, mixed(5e-3, 8, "gelu", {"wd": 0.03})),
    Pair("sphere4-unrelated", SPACE4, sphere((-4.0, 4.0, -4.0, 4.0)), SPACE4, sphere(TARGET_CENTER),
         kind="unrelated"),
    Pair("styblinski4-unrelated", SPACE4, random_sphere, SPACE4, styblinski_tang(),
         kind="unrelated", source_per_seed=True),
    # The source's optimum is the target's worst local minimum: a stress case, not a target.
    Pair("styblinski4-deceptive", SPACE4, sphere((2.75, 2.75, 2.75, 2.75)), SPACE4,
         styblinski_tang(), kind="deceptive"),
)
STRATEGIES = ("cold", "enqueue", "prior", "local")


# ---- one seed -------------------------------------------------------------------------------

def _optimize(study: optuna.Study, sp: SearchSpace, f: Objective, n: int) -> list[float]:
    study.optimize(lambda t: f(space.suggest(t, sp)), n_trials=n)
    return [t.value for t in study.trials]


def run_seed(args: tuple[str, int, int, int]) -> dict[str, Any]:
    pair_name, seed, n_source, n_trials = args
    pair = next(p for p in PAIRS if p.name == pair_name)   # problems are closures: pass names
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("autotune").setLevel(logging.ERROR)   # "parameters new here" on every seed
    storage = optuna.storages.InMemoryStorage()
    src = optuna.create_study(storage=storage, study_name="source",
                              sampler=build_sampler("tpe", seed=10_000 + seed))
    _optimize(src, pair.source_space, pair.source_for(seed), n_source)
    out: dict[str, Any] = {"pair": pair.name, "seed": seed}
    for strategy in STRATEGIES:
        ws = None if strategy == "cold" else WarmStartSpec(sources=("source",), strategy=strategy)
        spec = StudySpec(path=None, study=strategy, storage="memory", space=pair.target_space,
                         objectives=(ObjectiveSpec("f", "minimize"),), warm_start=ws,
                         optimizer=OptimizerSpec("tpe", seed=seed))
        sampler, apply = warmstart.prepare(spec, storage, build_sampler("tpe", seed=seed))
        study = optuna.create_study(storage=storage, study_name=strategy, sampler=sampler)
        apply(study)
        out[strategy] = _optimize(study, pair.target_space, pair.target, n_trials)
    return out


# ---- summary --------------------------------------------------------------------------------

def trials_to_reach(values: list[float], target: float) -> int | None:
    best = np.minimum.accumulate(values)
    hit = np.nonzero(best <= target)[0]
    return int(hit[0]) + 1 if hit.size else None


def bootstrap_median_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(x, size=(n_boot, len(x)), replace=True), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def summarize(runs: list[dict[str, Any]], pairs: list[Pair], n_trials: int) -> list[dict[str, Any]]:
    rows = []
    for pair in pairs:
        mine = [r for r in runs if r["pair"] == pair.name]
        cold_best = np.array([min(r["cold"]) for r in mine])
        for strategy in STRATEGIES:
            best = np.array([min(r[strategy]) for r in mine])
            row = {"pair": pair.name, "kind": pair.kind, "strategy": strategy,
                   "seeds": len(mine), "median_best": float(np.median(best))}
            if strategy != "cold":
                reach = [trials_to_reach(r[strategy], min(r["cold"])) for r in mine]
                as_num = np.array([n_trials + 1 if x is None else x for x in reach])
                diff = best - cold_best
                lo, hi = bootstrap_median_ci(diff)
                row.update({"median_reach": float(np.median(as_num)),
                            "reached": sum(x is not None for x in reach) / len(reach),
                            "median_diff": float(np.median(diff)), "diff_ci95": [lo, hi],
                            "worse_beyond_noise": lo > 0})
            rows.append(row)
    return rows


COMPARISON_HEAD = f"{'median reach':>12} {'reached':>8} {'warm-cold best (95% CI)':>32}"


def comparison_cells(r: dict[str, Any], n_trials: int) -> str:
    """A summary row's reach, share reached and warm - cold interval, under ``COMPARISON_HEAD``."""
    if r["strategy"] == "cold":
        return f"{'—':>12} {'—':>8} {'—':>32}"
    reach = r["median_reach"]
    reach_s = f">{n_trials}" if reach > n_trials else f"{reach:g}"
    lo, hi = r["diff_ci95"]
    flag = "  WORSE" if r["worse_beyond_noise"] else ""
    return (f"{reach_s:>12} {r['reached']:>8.0%} "
            f"{r['median_diff']:>+10.3g} [{lo:+.3g}, {hi:+.3g}]{flag}")


def print_table(rows: list[dict[str, Any]], n_trials: int) -> None:
    head = (f"{'pair':22} {'strategy':8} {'seeds':>5} {'median best@' + str(n_trials):>16} "
            + COMPARISON_HEAD)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['pair']:22} {r['strategy']:8} {r['seeds']:>5} {r['median_best']:>16.4g} "
              f"{comparison_cells(r, n_trials)}")
    for strategy in STRATEGIES[1:]:
        mine = [r for r in rows if r["strategy"] == strategy]
        related = [r for r in mine if r["kind"] == "related"]
        unrelated = [r for r in mine if r["kind"] == "unrelated"]
        fast = sum(r["median_reach"] <= 15 for r in related)
        safe = sum(not r["worse_beyond_noise"] for r in unrelated)
        print(f"{strategy}: related pairs with median reach <= 15: {fast}/{len(related)}; "
              f"unrelated pairs not worse than cold beyond noise: {safe}/{len(unrelated)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=50, help="trials of each target study")
    ap.add_argument("--source-trials", type=int, default=100,
                    help="trials of each earlier (source) study")
    ap.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 1)))
    ap.add_argument("--pairs", nargs="*", default=[p.name for p in PAIRS])
    ap.add_argument("--json", default="bench/warm_start.json")
    a = ap.parse_args(argv)
    pairs = [p for p in PAIRS if p.name in a.pairs]
    jobs = [(p.name, s, a.source_trials, a.trials) for p in pairs for s in range(a.seeds)]
    t0 = time.time()
    with mp.get_context("spawn").Pool(a.workers) as pool:
        runs = pool.map(run_seed, jobs, chunksize=1)
    elapsed = time.time() - t0
    rows = summarize(runs, pairs, a.trials)
    print_table(rows, a.trials)
    print(f"\n{len(jobs)} (pair, seed) runs in {elapsed:.0f} s on {a.workers} workers")
    meta = {"command": " ".join([sys.executable.split('/')[-1]] + sys.argv),
            "machine": platform.platform(), "python": platform.python_version(),
            "optuna": optuna.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seeds": a.seeds, "trials": a.trials, "source_trials": a.source_trials,
            "elapsed_s": round(elapsed, 1)}
    with open(a.json, "w") as fh:
        json.dump({"meta": meta, "summary": rows, "runs": runs}, fh, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
