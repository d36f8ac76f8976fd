"""Search quality when a pruner cuts most trials: the hybrid learning from pruned trials or not.

Each trial trains along a synthetic learning curve: at rung r of 4 its value is
``f(x) + G * s(x) * (4 / r - 1) / 2`` plus a little noise, where ``f`` is a problem of
``_quality_problems`` (its final value), ``G`` the problem's scale (random median - optimum) and
``s(x)`` in [0.25, 1.75] a smooth per-configuration speed (the mean of the unit coordinates): some
good configurations start slowly, as low learning rates do. Optuna's MedianPruner (3 start-up
trials) judges rungs 1-3; a trial that survives returns ``f(x)``. K trials are in flight (asked
before the oldest is run). Variants: ``hybrid`` (as shipped: pruned trials join its model below the
complete ones and count towards its start-up), ``hybrid_complete_only`` (the hybrid shown the
complete trials only: its behaviour before 2026-12-06), ``tpe``, ``gp`` (as shipped: Optuna's GP
behind ``PrunedAsComplete``, which shows it pruned trials as complete ones below the rest) and
``gp_complete_only`` (Optuna's GPSampler as it is, complete trials only). Prints the median normalized
regret of the best complete trial at each budget, the mean rank, the complete trials, and the
Wilcoxon test of each variant against the shipped hybrid (over problem x seed).

    python bench/pruned_search.py --problems branin-2,hartmann-6,styblinski-4 --seeds 4 --in-flight 4 --workers 2
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))   # this checkout's autotune
sys.path.insert(0, BENCH)                    # _quality_problems


import numpy as np

VARIANTS = ("hybrid", "hybrid_complete_only", "tpe", "gp", "gp_complete_only")
BUDGETS = (50, 100)
RUNGS = 4


def _sampler(variant: str, seed: int):
    from autotune.samplers import build_sampler
    from autotune.samplers._distinct import DistinctSampler
    from autotune.samplers.hybrid import HybridSampler
    if variant == "gp_complete_only":
        import optuna
        return DistinctSampler(optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False), seed=seed)
    if variant != "hybrid_complete_only":
        return build_sampler(variant, seed=seed)

    class CompleteOnly(HybridSampler):
        """The hybrid before 2026-12-06: its model and its start-up count see complete trials only
        (pruned ones still count as taken configurations, as they did)."""

        def _in_startup(self, n_complete, n_taken, n_pruned=0):
            return super()._in_startup(n_complete, n_taken, 0)

        def _propose(self, study, space, complete, pruned, running, taken):
            return super()._propose(study, space, complete, [], running, taken)

    return DistinctSampler(CompleteOnly(seed=seed), seed=seed)   # as build_sampler wraps every kind


def _unit(problem, x: np.ndarray) -> np.ndarray:
    out = []
    for v, xi in zip(problem.vars, x):
        lo, hi = (np.log(v.low), np.log(v.high)) if v.log else (v.low, v.high)
        out.append(((np.log(xi) if v.log else xi) - lo) / (hi - lo) if hi > lo else 0.5)
    return np.clip(np.array(out, dtype=float), 0.0, 1.0)


def run(task: tuple[str, str, int, int]) -> tuple[str, str, int, dict]:
    import optuna
    import torch

    from _quality_problems import PROBLEMS, random_median
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name, variant, seed, in_flight = task
    problem = PROBLEMS[name]
    scale = random_median(problem) - problem.f_opt
    study = optuna.create_study(sampler=_sampler(variant, seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    rng = np.random.RandomState(seed)
    best, out, pending, told, complete = np.inf, {}, [], 0, 0
    while told < max(BUDGETS):
        while len(pending) < in_flight and told + len(pending) < max(BUDGETS):
            trial = study.ask()
            pending.append((trial, problem.suggest(trial)))
        trial, x = pending.pop(0)
        f = float(problem.f(x))
        speed = 0.25 + 1.5 * float(_unit(problem, x).mean())
        pruned = False
        for rung in range(1, RUNGS):
            trial.report(f + scale * (speed * (RUNGS / rung - 1) / 2 + 0.02 * rng.standard_normal()), rung)
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, f)
            best, complete = min(best, f), complete + 1
        told += 1
        if told in BUDGETS:
            out[told] = {"regret": max(0.0, (best - problem.f_opt) / scale), "complete": complete}
    return name, variant, seed, out


def main() -> None:
    import _held_out as held_out
    import _quality_stats as stats
    args = held_out.parse_args(__doc__.split("\n\n")[0], VARIANTS, seeds=4, in_flight=4,
                               problems="branin-2,hartmann-6,styblinski-4,rosenbrock-4,ackley-5")
    problems, variants, results = held_out.run_all(run, args)
    for budget in BUDGETS:
        print(f"\n{budget} trials, {args.in_flight} in flight: median normalized regret (complete trials)\n")
        print("| problem | " + " | ".join(variants) + " |")
        print("|" + " --- |" * (len(variants) + 1))
        for p in problems:
            cells = []
            for v in variants:
                runs = [r[3][budget] for r in results if r[0] == p and r[1] == v]
                cells.append(f"{np.median([r['regret'] for r in runs]):.4f} "
                             f"({np.median([r['complete'] for r in runs]):.0f})")
            print(f"| {p} | " + " | ".join(cells) + " |")
        blocks: dict[tuple[str, int], dict[str, float]] = {}
        for name, variant, seed, out in results:
            blocks.setdefault((name, seed), {})[variant] = out[budget]["regret"]
        ranks = stats.mean_ranks(blocks, variants)
        print(f"| mean rank ({len(blocks)} blocks) | " + " | ".join(f"{ranks[v]:.2f}" for v in variants) + " |")
        if "hybrid" in variants:
            for v, t in stats.wilcoxon_vs(blocks, "hybrid", [v for v in variants if v != "hybrid"]).items():
                print(f"hybrid vs {v}: hybrid better/tied/worse {t['wins']}/{t['ties']}/{t['losses']}, "
                      f"Wilcoxon p = {t['p']:.3g}")


if __name__ == "__main__":
    main()
