"""The shared frame of bench/'s held-out-seed ablations (hybrid_ablation.py, pruned_search.py).

Owns: their command line (problems, variants, seeds 100, 101, ... held out from the suite's 0-5,
trials in flight, pool workers, a JSON of every run) and running every problem x variant x seed in
a 'spawn' pool. Each script keeps its own ``run(task)`` and its table.
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
