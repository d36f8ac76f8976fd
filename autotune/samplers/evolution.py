"""The ``evolution`` optimizer: a steady-state genetic algorithm on DEAP's operators, as an Optuna
sampler.

Owns: ``EvolutionSampler``. After a start-up of random trials, every proposal is a child bred
from the current elite: the best ``population_size`` of all the study's COMPLETE trials so far
(``selBest``, or ``selNSGA2`` for several objectives). There are no generations to fill, so with K
trials in flight a worker never waits for a generation's stragglers, and each trial that finishes
is a candidate parent of the very next proposal. The elite is read from the study store (the
trials and their values; exactly so for one objective, see ``Elite``), so workers on many machines
share one population; each sampler keeps it incrementally (its previous elite plus the trials
finished since, then selected), so at 1,000 trials a suggestion costs what random's does (about
3 ms in memory, the duplicate guard's share included). Mating uses tournaments of 6 (drawn with
replacement: each parent is on average in the top seventh of the elite; at 50-200 trials this
greedier choice beat binary tournaments on held-out seeds, see bench/RESULTS.md, "Evolution on
categorical, architecture-like spaces"); several objectives mate uniformly among NSGA-II
survivors. Genomes come from ``_encoding``, variation from ``_operators`` (integer grids mutate by
whole levels). The start-up and parameters no trial has used yet are sampled at random.
Infeasible trials (constraint values stored on them) rank below every feasible one, by total
violation. Each bred trial stores its parents' numbers (system attribute
``EvolutionSampler:parents``).
Must not know about: the model, the scheduler, the spec.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from deap import base, tools
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
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
_PARENTS_KEY = "EvolutionSampler:parents"
_MAX_DUPLICATE_RETRIES = 16


def default_population_size(n_params: int) -> int:
    """The hybrid's elite size: small enough for several generations within 50-200 trials."""
    return int(min(40, max(10, 8 + 2 * n_params)))


def evolution_population_size(n_params: int) -> int:
    """Evolution's elite size, 4 + n within 8 to 10: the parents of every child are drawn from
    the best this many complete trials. On held-out seeds with 6 to 32 parameters an elite of 10
    beat elites of 6, 8, 12, 4 + n (8 to 20) and 8 + 2n (see bench/RESULTS.md, "Steady-state
    evolution")."""
    return int(min(10, max(8, 4 + n_params)))


def startup_trials(population_size: int) -> int:
    """Complete trials before the first child is bred; until then proposals are random.
    Breeding from 5 or 8 complete trials instead of the whole elite did not help on held-out
    seeds."""
    return population_size


class EvolutionSampler(BaseSampler):
    """Steady-state genetic algorithm (DEAP operators) whose elite is shared through the store.

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
        self._fixed_population_size = population_size
        self._sizes: dict[int, int] = {}   # study id -> its stored population size, read once
        self._variation = Variation(crossover_prob, mutation_prob, eta_crossover, eta_mutation)
        self._tournament_size = tournament_size
        self._py_rng = random.Random(seed)
        self._np_rng = np.random.RandomState(seed)
        self._random_sampler = RandomSampler(seed=seed)
        self._elite = Elite()

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
        if not search_space:
            return {}
        size = self._resolve_population_size(study, len(search_space))
        elite, n_complete = self._elite.update(study, size)
        if n_complete < max(2, startup_trials(size)):
            return {}
        codec = GenomeCodec(search_space)
        taken = taken_params(study, trial)
        individuals = _individuals(elite, study.directions)
        child: dict[str, Any] = {}
        for _ in range(_MAX_DUPLICATE_RETRIES):
            mother, father = self._mating_pair(study, individuals)
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
        storage_of(study).set_trial_system_attr(
            trial_id_of(trial), _PARENTS_KEY, [mother.number, father.number]
        )
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

    def _mating_pair(
        self, study: Study, individuals: list[_Individual]
    ) -> tuple[FrozenTrial, FrozenTrial]:
        with deap_random(self._py_rng):
            if len(study.directions) > 1:
                # The elite are NSGA-II survivors: mate uniformly, as Optuna's NSGA-II does.
                pair = random.sample(individuals, 2)
            else:
                size = min(self._tournament_size, len(individuals))
                pair = tools.selTournament(individuals, 2, tournsize=size)
        return pair[0].trial, pair[1].trial

    def _resolve_population_size(self, study: Study, n_params: int) -> int:
        """Fix the population size once per study, in the store, so that all workers agree."""
        if self._fixed_population_size is not None:
            return self._fixed_population_size
        study_id = study_id_of(study)
        if study_id not in self._sizes:       # fixed once stored: read the store once, not a suggestion
            stored = storage_of(study).get_study_system_attrs(study_id).get(_POPULATION_SIZE_KEY)
            if stored is None:
                stored = evolution_population_size(n_params)
                storage_of(study).set_study_system_attr(study_id, _POPULATION_SIZE_KEY, stored)
            self._sizes[study_id] = stored
        return self._sizes[study_id]


class Elite:
    """The best ``size`` of a study's own COMPLETE trials, kept up to date from the trials that
    finished since the last call. Trials numbered below 0 (a warm start's source trials, which a
    prior view lists beside the study's own) are never members: evolution breeds from the study's
    own trials only.

    With one objective it is exactly ``select_elite`` of all complete trials, whatever order they
    finished in (ties go to the lower trial number). With several it is NSGA-II's survivors of the
    previous elite and the newly finished trials, so workers that saw trials finish in different
    batches can differ in the crowding-distance cut of the last front.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None   # (study id, size) the elite is of
        self.members: list[FrozenTrial] = []
        self._counted: set[int] = set()            # numbers of the complete trials merged so far

    def update(self, study: Study, size: int) -> tuple[list[FrozenTrial], int]:
        """(the elite, the number of own complete trials) for ``study`` as it is now."""
        with self._lock:
            if self._key != (study_id_of(study), size):
                self._key, self.members, self._counted = (study_id_of(study), size), [], set()
            trials = study_trials_cached(study, (TrialState.COMPLETE,), use_cache=True)
            finished = [t for t in trials if t.number >= 0 and t.number not in self._counted]
            if finished:
                self._counted.update(t.number for t in finished)
                self.members = select_elite(self.members + finished, size, study.directions)
            return list(self.members), len(self._counted)


def select_elite(
    trials: Sequence[FrozenTrial], size: int, directions: Sequence[StudyDirection]
) -> list[FrozenTrial]:
    """The best ``size`` of ``trials`` (``selBest``; ``selNSGA2`` for several objectives), ties to
    the lower trial number; infeasible trials below every feasible one."""
    ordered = sorted(trials, key=lambda t: t.number)
    individuals = _individuals(ordered, directions)
    k = min(size, len(individuals))
    if len(directions) > 1:
        chosen = tools.selNSGA2(individuals, k)
    else:
        chosen = tools.selBest(individuals, k)   # a stable sort: equal values keep number order
    return [ind.trial for ind in chosen]


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
