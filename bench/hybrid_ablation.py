"""Ablation of the hybrid sampler's start-up design and exploration, on held-out seeds.

Variants (monkeypatched on ``autotune.samplers.hybrid``, nothing else changes): ``shipped`` (the
sampler as it is: scrambled Sobol start-up for the numeric genes, random categoricals, exploration
0.1), ``maximin`` (its start-up before 2026-12-05: each start-up trial the one of 100 random points
farthest from the trials so far), ``random`` (plain random start-up), ``noexplore`` (exploration 0),
``maximin_noexp`` (both), ``proposed_startup`` (the start-up ends once ``n_startup_trials``
trials are proposed, running ones included, and half of them are complete; shipped: once that many
are complete, so with K in flight up to K - 1 more start-up points), ``plugin_ei`` (expected
improvement over the best GP posterior mean at a finished trial instead of the best observed
score: "plug-in" EI for noisy or jumpy objectives), ``norefine`` (no local search polishing the
best candidates on log EI: the surrogate evolution's candidates as they are). K trials in flight
(``--in-flight``, default 1); regret as in ``search_quality.py`` (normalized; noisy problems: the
noise-free value of the trial that looked best). Prints per-problem medians, the mean of medians, the mean rank over problem x seed and, when
``shipped`` runs, each variant against it (Wilcoxon signed-rank over problem x seed, two-sided).

    python bench/hybrid_ablation.py --problems branin-2,hartmann-6,svc-breast-cancer --seeds 5 --workers 2
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))   # this checkout's autotune
sys.path.insert(0, BENCH)                    # _quality_problems

import numpy as np

VARIANTS = {"shipped": {}, "maximin": {"startup": "maximin"}, "random": {"startup": "random"},
            "noexplore": {"exploration": 0.0}, "maximin_noexp": {"startup": "maximin", "exploration": 0.0},
            "proposed_startup": {"count": "proposed"}, "plugin_ei": {"incumbent": "posterior_mean"},
            "norefine": {"refine": False}}
BUDGETS = (20, 50)
_ORIGINAL: dict = {}   # the sampler's own functions, as imported in this process


def _patch_startup(hybrid, kind: str) -> None:
    def space_filling(codec, taken, rng, seed):
        if kind == "random" or not taken:
            return codec.decode(*hybrid._random_genome(codec, rng))
        candidates = [codec.decode(*hybrid._random_genome(codec, rng)) for _ in range(100)]
        X, T = codec.unit_matrix(candidates), codec.unit_matrix(taken)
        k = len(codec.numeric)
        distance = ((X[:, None, :k] - T[None, :, :k]) ** 2).sum(-1)
        distance += (X[:, None, k:] != T[None, :, k:]).sum(-1)
        return candidates[int(np.argmax(distance.min(axis=1)))]
    hybrid._space_filling = space_filling


def _posterior_mean_incumbent(gpr, X, y) -> float:
    """Plug-in EI's incumbent: the best posterior mean at a finished trial, not the best
    observation (which, on a jumpy or noisy objective, is a lucky draw above the GP's trend)."""
    import torch
    with torch.no_grad():
        mean, _ = gpr.posterior(torch.from_numpy(X))
    return float(mean.max())


def run(task: tuple[str, str, int, int]) -> tuple[str, str, int, dict[int, float]]:
    name, variant, seed, in_flight = task
    import optuna
    import torch

    import autotune.samplers.hybrid as hybrid
    from _quality_problems import PROBLEMS, random_median
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    options = dict(VARIANTS[variant])
    # A pool process runs many tasks: undo the previous task's patch before applying this one's.
    hybrid._space_filling = _ORIGINAL.setdefault("space_filling", hybrid._space_filling)
    hybrid.HybridSampler._in_startup = _ORIGINAL.setdefault("in_startup", hybrid.HybridSampler._in_startup)
    hybrid._incumbent = _ORIGINAL.setdefault("incumbent", hybrid._incumbent)
    hybrid.HybridSampler._refine = _ORIGINAL.setdefault("refine", hybrid.HybridSampler._refine)
    if options.pop("refine", True) is False:   # no local search: the surrogate evolution's candidates as they are
        hybrid.HybridSampler._refine = lambda self, gpr, codec, best, threshold: []
    if options.pop("incumbent", None) == "posterior_mean":
        hybrid._incumbent = _posterior_mean_incumbent
    if options.pop("count", None) == "proposed":
        hybrid.HybridSampler._in_startup = lambda self, n_complete, n_taken, n_pruned=0: (
            n_taken < self._n_startup_trials or n_complete < self._n_startup_trials // 2)
    if "startup" in options:
        _patch_startup(hybrid, options.pop("startup"))
    problem = PROBLEMS[name]
    study = optuna.create_study(sampler=hybrid.HybridSampler(seed=seed, **options))
    normalizer = random_median(problem) - problem.f_opt
    best, out, pending, told = (np.inf, np.inf), {}, [], 0
    while told < max(BUDGETS):   # ``in_flight`` trials asked before the oldest is told
        while len(pending) < in_flight and told + len(pending) < max(BUDGETS):
            trial = study.ask()
            pending.append((trial, problem.suggest(trial)))
        trial, x = pending.pop(0)
        value = problem.f(x)
        noise = problem.noise * normalizer * np.random.RandomState([seed, trial.number]).standard_normal()
        study.tell(trial, value + noise)
        best = min(best, (value + noise, value))
        told += 1
        if told in BUDGETS:
            out[told] = max(0.0, (best[1] - problem.f_opt) / normalizer)
    return name, variant, seed, out


def main() -> None:
    import _held_out as held_out
    args = held_out.parse_args(__doc__.split("\n\n")[0], list(VARIANTS), problems=None, seeds=5, in_flight=1)
    problems, variants, results = held_out.run_all(run, args)
    held_out.print_tables(problems, variants, results, BUDGETS, args.in_flight)


if __name__ == "__main__":
    main()
