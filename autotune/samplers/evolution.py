"""The ``evolution`` optimizer: a genetic algorithm on DEAP's operators, as an Optuna sampler.

Owns: ``EvolutionSampler``. Generations and parent populations live in the study store (trial
and study system attributes, through Optuna's ``BaseGASampler``), so workers on many machines
share one population. Selection is elitist (mu + lambda): the parents of generation g are the
best ``population_size`` of generation g-1 and its parents (``selBest``, or ``selNSGA2`` for
several objectives); mating uses tournaments of 6 (drawn with replacement: each parent is on
average in the top seventh of the survivors; at 50-200 trials this greedier choice beat binary
tournaments on held-out seeds, see bench/RESULTS.md, "Evolution on categorical, architecture-like
spaces"). Genomes come from ``_encoding``, variation from ``_operators`` (integer grids mutate
by whole levels). Generation 0 and parameters no trial has used yet are sampled at random;
generations hold 4 + n trials (8 to 20) so that small budgets still see several of them.
Infeasible trials (constraint values stored on them) rank below every feasible one, by total
violation.
Must not know about: the model, the scheduler, the spec.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from deap import base, tools
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseGASampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import storage_of, study_id_of, study_trials_cached, trial_id_of
from autotune.samplers._constraints import penalized_values
from autotune.samplers._encoding import (
    GenomeCodec,
    is_taken,
    remember_proposal,
    taken_params,
    union_search_space,
)
from autotune.samplers._operators import Variation, deap_random, make_child

_POPULATION_SIZE_KEY = "EvolutionSampler:population_size"
_MAX_DUPLICATE_RETRIES = 16


def default_population_size(n_params: int) -> int:
    """The hybrid's elite size: small enough for several generations within 50-200 trials."""
    return int(min(40, max(10, 8 + 2 * n_params)))


def evolution_population_size(n_params: int) -> int:
    """Evolution's generation size: generation 0 is random, so a large one spends a small budget
    on random search (26 of 50 trials for 9 parameters at 8 + 2n); at 4 + n, 8 to 20, a study
    of 50 trials sees 3-5 evolved generations."""
    return int(min(20, max(8, 4 + n_params)))


class EvolutionSampler(BaseGASampler):
    """Genetic algorithm (DEAP operators) whose population is shared through the study store.

    Example:
        >>> import optuna
        >>> from autotune.samplers import build_sampler
        >>> study = optuna.create_study(sampler=build_sampler("evolution", seed=0))
        >>> study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=30)
        >>> study.best_value < 1.0
        True
    """

    def __init__(
        self,
        *,
        population_size: int | None = None,
        mutation_prob: float | None = None,
        crossover_prob: float = 0.9,
        eta_crossover: float = 15.0,
        eta_mutation: float = 20.0,
        tournament_size: int = 6,
        seed: int | None = None,
    ) -> None:
        super().__init__(population_size)
        self._fixed_population_size = population_size
        self._variation = Variation(crossover_prob, mutation_prob, eta_crossover, eta_mutation)
        self._tournament_size = tournament_size
        self._py_rng = random.Random(seed)
        self._np_rng = np.random.RandomState(seed)
        self._random_sampler = RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._py_rng.seed()
        self._np_rng.seed()
        self._random_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        trials = study_trials_cached(study, (TrialState.COMPLETE,), use_cache=True)
        return union_search_space(trials)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._resolve_population_size(study, len(search_space))
        generation = self.get_trial_generation(study, trial)
        if not search_space or generation == 0:
            return {}
        parents = self.get_parent_population(study, generation)
        if len(parents) < 2:
            return {}
        codec = GenomeCodec(search_space)
        taken = taken_params(study, trial)
        child: dict[str, Any] = {}
        for _ in range(_MAX_DUPLICATE_RETRIES):
            mother, father = self._mating_pair(study, parents)
            genome = make_child(
                codec.encode(mother.params, self._np_rng),
                codec.encode(father.params, self._np_rng),
                codec.n_choices,
                self._variation,
                self._py_rng,
                levels=codec.levels,
            )
            child = codec.decode(*genome)
            if not is_taken(child, taken):
                break
        remember_proposal(study, trial, child)
        return child

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    def select_parent(self, study: Study, generation: int) -> list[FrozenTrial]:
        """Elitist survivors: best of generation-1 and its parents (NSGA-II for >1 objective)."""
        pool = {trial_id_of(t): t for t in self.get_population(study, generation - 1)}
        for t in self.get_parent_population(study, generation - 1):
            pool.setdefault(trial_id_of(t), t)
        individuals = _individuals(list(pool.values()), study.directions)
        assert self.population_size is not None
        k = min(self.population_size, len(individuals))
        if len(study.directions) > 1:
            chosen = tools.selNSGA2(individuals, k)
        else:
            chosen = tools.selBest(individuals, k)
        return [ind.trial for ind in chosen]

    def _mating_pair(
        self, study: Study, parents: list[FrozenTrial]
    ) -> tuple[FrozenTrial, FrozenTrial]:
        individuals = _individuals(parents, study.directions)
        with deap_random(self._py_rng):
            if len(study.directions) > 1:
                # Parents are already NSGA-II survivors: mate uniformly, as Optuna's NSGA-II does.
                pair = random.sample(individuals, 2)
            else:
                size = min(self._tournament_size, len(individuals))
                pair = tools.selTournament(individuals, 2, tournsize=size)
        return pair[0].trial, pair[1].trial

    def _resolve_population_size(self, study: Study, n_params: int) -> None:
        """Fix the population size once per study, in the store, so that all workers agree."""
        if self._fixed_population_size is not None:
            return
        stored = storage_of(study).get_study_system_attrs(study_id_of(study)).get(_POPULATION_SIZE_KEY)
        if stored is None and n_params > 0:
            stored = evolution_population_size(n_params)
            study._storage.set_study_system_attr(study._study_id, _POPULATION_SIZE_KEY, stored)
        self.population_size = stored if stored is not None else evolution_population_size(0)


class _Individual(list):
    """A DEAP individual standing for one finished trial."""

    def __init__(self, trial: FrozenTrial, fitness: base.Fitness) -> None:
        super().__init__()
        self.trial = trial
        self.fitness = fitness


_FITNESS_CLASSES: dict[tuple[float, ...], type] = {}


def _individuals(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
) -> list[_Individual]:
    weights = tuple(1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions)
    fitness_cls = _FITNESS_CLASSES.get(weights)
    if fitness_cls is None:
        fitness_cls = type("Fitness", (base.Fitness,), {"weights": weights})
        _FITNESS_CLASSES[weights] = fitness_cls
    out = []
    # Infeasible trials (stored constraint values > 0) are worse than every feasible one.
    for trial, values in zip(trials, penalized_values(trials, directions)):
        fitness = fitness_cls()
        fitness.values = tuple(float(v) for v in values)
        out.append(_Individual(trial, fitness))
    return out


__all__ = ["EvolutionSampler", "default_population_size", "evolution_population_size"]
