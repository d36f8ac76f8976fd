"""Variation operators on genomes, from DEAP: SBX crossover and polynomial mutation for numeric
genes in [0, 1], uniform crossover and random resets for categorical genes.

Owns: turning two parent genomes into one child genome, reproducibly. DEAP draws from Python's
global ``random``; ``deap_random`` lends it a private state for the duration of a call so that
samplers are reproducible under a seed and the user's global ``random`` is left alone.
Must not know about: Optuna trials, the study store, surrogates.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from deap import tools

Genome = tuple[list[float], list[int]]   # (numeric genes in [0, 1], categorical indices)


@dataclass(frozen=True)
class Variation:
    crossover_prob: float = 0.9
    mutation_prob: float | None = None   # per gene; None: 1 / n_genes
    eta_crossover: float = 15.0          # SBX distribution index (larger: children near parents)
    eta_mutation: float = 20.0           # polynomial mutation distribution index


@contextlib.contextmanager
def deap_random(state: random.Random) -> Iterator[None]:
    """Run DEAP operators on ``state`` instead of the global ``random`` generator."""
    saved = random.getstate()
    random.setstate(state.getstate())
    try:
        yield
    finally:
        state.setstate(random.getstate())
        random.setstate(saved)


def make_child(
    mother: Genome,
    father: Genome,
    n_choices: Sequence[int],
    variation: Variation,
    rng: random.Random | None,
    eta_mutation: float | None = None,
) -> Genome:
    """One child of two parents: crossover with ``crossover_prob``, then per-gene mutation.

    ``rng=None``: the caller has already entered ``deap_random`` (cheaper for many children).
    """
    num_a, num_b = list(mother[0]), list(father[0])
    cat_a, cat_b = list(mother[1]), list(father[1])
    n_genes = len(num_a) + len(cat_a)
    indpb = variation.mutation_prob if variation.mutation_prob is not None else 1.0 / max(1, n_genes)
    eta_m = variation.eta_mutation if eta_mutation is None else eta_mutation
    with deap_random(rng) if rng is not None else contextlib.nullcontext():
        if random.random() < variation.crossover_prob:
            if num_a:
                num_a, num_b = tools.cxSimulatedBinaryBounded(
                    num_a, num_b, eta=variation.eta_crossover, low=0.0, up=1.0
                )
            if cat_a:
                cat_a, cat_b = tools.cxUniform(cat_a, cat_b, indpb=0.5)
        if random.random() < 0.5:
            num_a, cat_a = num_b, cat_b
        if num_a:
            (num_a,) = tools.mutPolynomialBounded(num_a, eta=eta_m, low=0.0, up=1.0, indpb=indpb)
        for i, n in enumerate(n_choices):
            if n > 1 and random.random() < indpb:
                cat_a[i] = random.choice([c for c in range(n) if c != cat_a[i]])
    return [min(1.0, max(0.0, float(u))) for u in num_a], [int(c) for c in cat_a]
