"""What the hybrid sampler proposes over a study, against TPE: where its numeric genes sit, which
categorical levels it picks, and what its GP believes (fitted noise, best observation against the
best posterior mean at a finished trial, the incumbent of expected improvement).

One problem of ``_quality_problems``, 1 trial in flight, seeds 0..N-1 (the suite's), one process.
Per kind: the share of numeric genes within 5 % of a bound of their (log) range among the trials
after the start-up, the most frequent level of each categorical, the best value; for ``hybrid`` and
``hybrid_plugin`` (EI over the best posterior mean, as ``hybrid_ablation.py``'s ``plugin_ei``) also
the GP's noise variance (standardized scores: 1 = all of the variance) and the gap between the
best transformed score and the best posterior mean, averaged over the model-guided suggestions.

    python bench/hybrid_trace.py --problem sgd-digits --seeds 3 --trials 50
    python bench/hybrid_trace.py --problem sgd-digits --kinds hybrid --no-refine   # without local search
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))   # this checkout's autotune
sys.path.insert(0, BENCH)                    # _quality_problems

import argparse
import collections
import json
import math

import numpy as np


def _unit(value: float, dist) -> float:
    low, high = float(dist.low), float(dist.high)
    if getattr(dist, "log", False):
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low) if high > low else 0.5


def trace(problem_name: str, kind: str, seed: int, n_trials: int, refine: bool = True) -> dict:
    import optuna
    import torch
    from optuna.distributions import CategoricalDistribution

    import autotune.samplers.hybrid as hybrid
    from _quality_problems import PROBLEMS
    from autotune.samplers import build_sampler
    from hybrid_ablation import _posterior_mean_incumbent

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    model: list[dict] = []
    original = hybrid._incumbent

    def incumbent(gpr, X, y):
        mean = _posterior_mean_incumbent(gpr, X, y)
        model.append({"noise_var": float(gpr.noise_var), "y_max": float(y.max()), "mean_max": mean})
        return mean if kind == "hybrid_plugin" else original(gpr, X, y)

    hybrid._incumbent = incumbent
    original_refine = hybrid.HybridSampler._refine
    if not refine:   # no local search: the candidates of the surrogate evolution as they are
        hybrid.HybridSampler._refine = lambda self, gpr, codec, best, threshold: []
    try:
        problem = PROBLEMS[problem_name]
        sampler = build_sampler("hybrid" if kind.startswith("hybrid") else kind, seed=seed)
        study = optuna.create_study(sampler=sampler)
        for _ in range(n_trials):
            trial = study.ask()
            x = problem.suggest(trial)
            study.tell(trial, problem.f(x))
    finally:
        hybrid._incumbent = original
        hybrid.HybridSampler._refine = original_refine
    late = study.trials[10:]   # after the start-up (10 trials for hybrid and TPE)
    edge, numeric, levels = 0, 0, collections.defaultdict(collections.Counter)
    for t in late:
        for name, value in t.params.items():
            dist = t.distributions[name]
            if isinstance(dist, CategoricalDistribution):
                levels[name][value] += 1
            else:
                u = _unit(value, dist)
                numeric += 1
                edge += u <= 0.05 or u >= 0.95
    return {"kind": kind, "seed": seed, "best": study.best_value,
            "edge_share": edge / max(numeric, 1),
            "levels": {k: dict(v) for k, v in levels.items()},
            "params": [t.params for t in study.trials], "values": [t.value for t in study.trials],
            "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="sgd-digits")
    parser.add_argument("--kinds", default="tpe,hybrid,hybrid_plugin")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--no-refine", action="store_true",
                        help="hybrid without the local search that polishes its two best candidates")
    parser.add_argument("--out", help="JSON of every trial")
    args = parser.parse_args()
    runs = [trace(args.problem, k, s, args.trials, not args.no_refine) for k in args.kinds.split(",") for s in range(args.seeds)]
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(runs, fh, default=str)
    print("| kind | seed | best | numeric genes within 5 % of a bound (trials 11+) | most frequent levels "
          "(trials 11+) | GP noise var (mean) | best score - best posterior mean (mean) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        top = ", ".join(f"{k}={max(v, key=v.get)} ({max(v.values())})" for k, v in r["levels"].items())
        noise = np.mean([m["noise_var"] for m in r["model"]]) if r["model"] else float("nan")
        gap = np.mean([m["y_max"] - m["mean_max"] for m in r["model"]]) if r["model"] else float("nan")
        print(f"| {r['kind']} | {r['seed']} | {r['best']:.5f} | {r['edge_share']:.2f} | {top} | "
              f"{noise:.3g} | {gap:.3g} |")


if __name__ == "__main__":
    main()
