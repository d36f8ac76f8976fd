"""Ablation of the evolution sampler's start-up and elite size, on held-out seeds.

Variants: ``generational`` (the sampler before it became steady-state, as of commit
``GENERATIONAL``, read with ``git show``: generation 0 random, each generation's parents the best
of the previous one and its parents; generations of 4 + n, 8 to 20), ``shipped`` (the
steady-state sampler as it is: an elite of 4 + n within 8 to 10, breeding once the elite's size
of trials are complete) and steady-state variants, patched on ``autotune.samplers.evolution`` and
nothing else: ``pop4n`` (an elite of 4 + n within 8 to 20, the generations' size), ``popN`` (an
elite of N), ``startN`` (breed once min(elite, N) trials are complete), ``popN_startM`` (both),
``pop2x`` (an elite of 8 + 2n, 16 to 40, breeding once half of it is complete). Each run is ``search_quality.run_one``
(K trials in flight, regret normalized as there) at 20, 50, 100 and 200 trials. Prints per
problem medians, the mean of medians, the mean rank over problem x seed and each variant against
``shipped`` (Wilcoxon signed-rank over problem x seed, two-sided).

    python bench/evolution_ablation.py --problems nk-16,cell-2x6 --seeds 6 --in-flight 8 --workers 2
"""
from __future__ import annotations

import os
import subprocess
import sys
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))   # this checkout's autotune
sys.path.insert(0, BENCH)                    # _quality_problems, search_quality

GENERATIONAL = "23c4fb5"   # the last commit with the generational sampler
BUDGETS = (20, 50, 100, 200)
VARIANTS = ("generational", "shipped", "pop4n", "pop4n_start8", "pop4n_start5", "pop6", "pop8", "pop12",
            "pop10_start5", "pop10_start8", "pop2x")
_ORIGINAL: dict = {}


def _generational_class() -> type:
    if "generational" not in _ORIGINAL:
        source = subprocess.run(["git", "show", f"{GENERATIONAL}:autotune/samplers/evolution.py"],
                                cwd=BENCH, capture_output=True, text=True, check=True).stdout
        module = types.ModuleType("evolution_generational")
        exec(compile(source, "evolution_generational.py", "exec"), module.__dict__)
        _ORIGINAL["generational"] = module.EvolutionSampler
    return _ORIGINAL["generational"]


def _patch(evolution, variant: str) -> None:
    """Set ``variant``'s policies on the module (a pool process runs many tasks: undo first)."""
    for name in ("EvolutionSampler", "startup_trials", "evolution_population_size"):
        setattr(evolution, name, _ORIGINAL.setdefault(name, getattr(evolution, name)))
    if variant == "generational":
        evolution.EvolutionSampler = _generational_class()
    elif variant == "pop2x":
        evolution.evolution_population_size = lambda n: int(min(40, max(16, 8 + 2 * n)))
        evolution.startup_trials = lambda size: size // 2
    else:
        for part in variant.split("_"):   # "shipped": none applies
            if part == "pop4n":
                evolution.evolution_population_size = lambda n: int(min(20, max(8, 4 + n)))
            elif part.startswith("pop"):
                evolution.evolution_population_size = lambda n, size=int(part[3:]): size
            elif part.startswith("start"):
                evolution.startup_trials = lambda size, first=int(part[5:]): min(size, first)


def run(task: tuple[str, str, int, int]) -> tuple[str, str, int, dict[int, float]]:
    name, variant, seed, in_flight = task
    import autotune.samplers.evolution as evolution
    import search_quality as sq
    _patch(evolution, variant)
    result = sq.run_one((name, "evolution", seed, BUDGETS, in_flight))
    return name, variant, seed, result.regret


def main() -> None:
    import _held_out as held_out
    args = held_out.parse_args(__doc__.split("\n\n")[0], VARIANTS, problems=None, seeds=6, in_flight=8)
    problems, variants, results = held_out.run_all(run, args)
    held_out.print_tables(problems, variants, results, BUDGETS, args.in_flight)


if __name__ == "__main__":
    main()
