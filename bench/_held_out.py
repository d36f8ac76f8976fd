"""The shared frame of bench/'s held-out-seed ablations (hybrid_ablation.py, evolution_ablation.py,
pruned_search.py).

Owns: their command line (problems, variants, seeds 100, 101, ... held out from the suite's 0-5,
trials in flight, pool workers, a JSON of every run) and running every problem x variant x seed in
a 'spawn' pool, and the regret tables of the ablations whose runs return normalized regret by
budget (``print_tables``). Each script keeps its own ``run(task)``.
Must not know about: samplers, problems, how a run scores.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any


def parse_args(description: str, variants: Sequence[str], *, problems: str | None, seeds: int,
               in_flight: int) -> argparse.Namespace:
    """The command line; ``problems`` None makes --problems required."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--problems", required=problems is None, default=problems,
                        help="comma-separated names of _quality_problems")
    parser.add_argument("--variants", default=",".join(variants))
    parser.add_argument("--seeds", type=int, default=seeds, help="seeds 100, 101, ... (held out from the suite's 0-5)")
    parser.add_argument("--in-flight", type=int, default=in_flight, help="trials asked before the oldest is told")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="JSON of every run")
    return parser.parse_args()


def run_all(run: Callable[[tuple], Any], args: argparse.Namespace) -> tuple[list[str], list[str], list]:
    """``run((problem, variant, seed, in_flight))`` for every combination, in a pool; the results
    (also written to ``--out``), with the problems and variants in the order asked."""
    problems, variants = args.problems.split(","), args.variants.split(",")
    tasks = list(itertools.product(problems, variants, range(100, 100 + args.seeds), [args.in_flight]))
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(run, tasks, chunksize=1)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f)
    return problems, variants, results


def print_tables(problems: Sequence[str], variants: Sequence[str], results: list, budgets: Sequence[int],
                 in_flight: int) -> None:
    """Per budget: each problem's median normalized regret over seeds by variant, their mean, the
    mean rank over problem x seed blocks and, where a variant is called ``shipped``, each other
    variant against it (Wilcoxon signed-rank over the blocks, two-sided; W/T/L are the variant's)."""
    import numpy as np
    from scipy.stats import rankdata

    import _quality_stats as stats
    for budget in budgets:
        print(f"\n{budget} trials, {in_flight} in flight: median normalized regret over seeds\n")
        print("| problem | " + " | ".join(variants) + " |")
        print("|" + " --- |" * (len(variants) + 1))
        medians = {}
        for p in problems:
            medians[p] = [float(np.median([r[3][budget] for r in results if r[0] == p and r[1] == v]))
                          for v in variants]
            print(f"| {p} | " + " | ".join(f"{m:.4f}" for m in medians[p]) + " |")
        print("| mean of medians | " + " | ".join(f"{np.mean([medians[p][i] for p in problems]):.4f}"
                                                 for i in range(len(variants))) + " |")
        blocks: dict[tuple[str, int], dict[str, float]] = {}
        for name, variant, seed, regret in results:
            blocks.setdefault((name, seed), {})[variant] = regret[budget]
        ranks = np.array([rankdata([row[v] for v in variants]) for row in blocks.values()]).mean(axis=0)
        print(f"| mean rank ({len(blocks)} blocks) | " + " | ".join(f"{r:.2f}" for r in ranks) + " |")
        if "shipped" in variants and len(variants) > 1:
            others = [v for v in variants if v != "shipped"]
            tests = stats.wilcoxon_vs(blocks, "shipped", others)
            print("| vs shipped: W/T/L, p (Wilcoxon) | " + " | ".join(
                "-" if v == "shipped" else
                f"{tests[v]['losses']}/{tests[v]['ties']}/{tests[v]['wins']}, p = {tests[v]['p']:.2g}"
                for v in variants) + " |")
