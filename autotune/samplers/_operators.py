"""Variation operators on genomes, from DEAP: SBX crossover and polynomial mutation for numeric
genes in [0, 1], uniform crossover and random resets for categorical genes. Genes of integer grids
(``levels``: L values, each an equal share of [0, 1]) mutate on their level index instead, and a
mutation moves them at least one level: in [0, 1] most of polynomial mutation's small steps would
round back to the value the gene had, and a population would stop exploring its integers.

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
    levels: Sequence[int] | None = None,
) -> Genome:
    """One child of two parents: crossover with ``crossover_prob``, then per-gene mutation.

    ``rng=None``: the caller has already entered ``deap_random`` (cheaper for many children).
    ``levels``: per numeric gene, the number of values of its integer grid (0: continuous); None:
    every numeric gene is continuous.
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
        grid = [i for i, n in enumerate(levels or ()) if n > 1]
        continuous = [i for i in range(len(num_a)) if i not in grid]
        if continuous:
            genes = [num_a[i] for i in continuous]
            (genes,) = tools.mutPolynomialBounded(genes, eta=eta_m, low=0.0, up=1.0, indpb=indpb)
            for i, u in zip(continuous, genes):
                num_a[i] = u
        for i in grid:
            if random.random() < indpb:
                num_a[i] = _mutate_level(num_a[i], levels[i], eta_m)  # type: ignore[index]
        for i, n in enumerate(n_choices):
            if n > 1 and random.random() < indpb:
                cat_a[i] = random.choice([c for c in range(n) if c != cat_a[i]])
    return [min(1.0, max(0.0, float(u))) for u in num_a], [int(c) for c in cat_a]


def _mutate_level(u: float, n_levels: int, eta: float) -> float:
    """Polynomial mutation of a grid gene's level index (0 .. n_levels-1) that moves it >= 1 level.

    Returns the centre of the new level's share of [0, 1].
    """
    level = min(n_levels - 1, int(u * n_levels))
    (moved,) = tools.mutPolynomialBounded([float(level)], eta=eta, low=0.0, up=n_levels - 1.0, indpb=1.0)
    new = int(round(moved[0]))
    if new == level:   # rounded back: step one level in the direction it leaned (or the open one)
        direction = 1 if moved[0] > level else -1 if moved[0] < level else random.choice((-1, 1))
        if not 0 <= level + direction < n_levels:
            direction = -direction
        new = level + direction
    return (new + 0.5) / n_levels
