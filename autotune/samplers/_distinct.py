"""The duplicate guard: a sampler wrapper that never proposes a configuration a trial already has.

Owns: ``DistinctSampler(inner)``. With K trials running it keeps the K proposals distinct, and it
never proposes a finished configuration again (every state but WAITING counts: a failed or pruned
configuration is not worth a second run unless it is re-queued on purpose).
- ``sample_relative``: when the inner sampler's proposal repeats a trial's configuration (or
  leaves its discrete, independently sampled parameters no new completion), ask it again (its
  RNG moves on) up to twice, then nudge the proposal: one gene mutated at a time in the genome
  space of ``_encoding`` (a GP, nearly deterministic and slow, would repeat itself).
- ``sample_independent`` (startup phases, parameters outside the relative space): when the value
  would complete a trial's configuration, it is drawn again, then uniformly among the values that
  do not.
A space too small to hold another distinct configuration gets the duplicate, logged once.
Proposals of relative samplers are stored on their trial (``remember_proposal``), so processes
sharing the study see them before the parameters are suggested.
Must not know about: the model, the scheduler, the spec.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import trial_id_of
from autotune.samplers._encoding import (
    GenomeCodec,
    proposed_params,
    remember_proposal,
    union_search_space,
)

_RETRIES = 8
_RELATIVE_RETRIES = 2   # a relative proposal can cost a second (GP): then nudge instead
_logger = logging.getLogger("autotune.samplers")


class DistinctSampler(BaseSampler):
    """Wraps ``inner`` so that no two trials of a study get the same configuration.

    Example:
        >>> import optuna
        >>> sampler = DistinctSampler(optuna.samplers.RandomSampler(seed=0), seed=0)
        >>> study = optuna.create_study(sampler=sampler)
        >>> trials = [study.ask() for _ in range(3)]
        >>> len({t.suggest_int("n", 0, 2) for t in trials})
        3
    """

    def __init__(self, inner: BaseSampler, *, seed: int | None = None) -> None:
        self.inner = inner
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._taken: tuple[int, list[dict[str, Any]]] | None = None   # (trial id, configurations)
        self._relative: dict[int, dict[str, Any]] = {}                # trial id -> its proposal
        self._space: dict[str, BaseDistribution] = {}                 # every parameter seen
        self._warned = False

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._rng.seed()
        self._random.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._taken = None
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self.inner.sample_relative(study, trial, search_space)
        if not params:
            return params
        taken = self._taken_configs(study, trial)
        for _ in range(_RELATIVE_RETRIES):
            if not self._dead_end(params, trial, taken):
                break
            params = self.inner.sample_relative(study, trial, search_space)
        else:
            params = self._nudge(params, search_space, trial, taken)
        self._relative = {trial_id_of(trial): params}
        remember_proposal(study, trial, params)
        return params

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        taken = self._taken_configs(study, trial)
        planned = {**self._relative.get(trial_id_of(trial), {}), **trial.params}

        def repeats(v: Any) -> bool:
            return _repeats({**planned, param_name: v}, {**trial.params, param_name: v}, taken)

        for _ in range(_RETRIES):
            if not repeats(value):
                return value
            value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        if isinstance(param_distribution, CategoricalDistribution):
            free = [c for c in param_distribution.choices if not repeats(c)]
            if free:
                return free[self._rng.randint(len(free))]
        else:
            for _ in range(4 * _RETRIES):
                value = self._random.sample_independent(study, trial, param_name, param_distribution)
                if not repeats(value):
                    return value
        self._warn_once(param_name)
        return value

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Any
    ) -> None:
        self._relative.pop(trial_id_of(trial), None)
        self.inner.after_trial(study, trial, state, values)

    # -- helpers ---------------------------------------------------------------------------

    def _taken_configs(self, study: Study, trial: FrozenTrial) -> list[dict[str, Any]]:
        """Every other trial's configuration (running ones: what they were proposed), read once
        per trial: within one trial's suggestions no other trial of this process changes."""
        if self._taken is None or self._taken[0] != trial_id_of(trial):
            trials = study.get_trials(deepcopy=False)
            configs = [
                proposed_params(t) for t in trials
                if trial_id_of(t) != trial_id_of(trial) and t.state != TrialState.WAITING
            ]
            self._taken = (trial_id_of(trial), [c for c in configs if c])
            self._space = union_search_space(t for t in trials if t.state.is_finished())
        return self._taken[1]

    def _dead_end(
        self, params: dict[str, Any], trial: FrozenTrial, taken: list[dict[str, Any]]
    ) -> bool:
        """Whether a relative proposal repeats a trial, or leaves its other (independently
        sampled, discrete) parameters no value that would not (NSGA-II drops mutated genes
        from its proposals; a proposal with all their completions taken is a repeat too)."""
        planned = {**params, **trial.params}
        if _repeats(planned, trial.params, taken):
            return True
        rest = {k: d for k, d in self._space.items() if k not in planned}
        n_completions = 1
        for dist in rest.values():
            size = _n_values(dist)
            if size is None:
                return False
            n_completions *= size
        seen = {
            tuple(other.get(k) for k in sorted(rest)) for other in taken
            if all(planned[k] == v for k, v in other.items() if k in planned)
            and other.keys() - planned.keys() <= rest.keys()
        }
        return len(seen) >= n_completions

    def _nudge(
        self, params: dict[str, Any], space: dict[str, BaseDistribution], trial: FrozenTrial,
        taken: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The proposal with one gene changed (small numeric steps first, then larger ones)."""
        codec = GenomeCodec({k: v for k, v in space.items() if k in params})
        if codec.n_genes == 0:
            return params
        numeric, categorical = codec.encode(params, self._rng)
        for attempt in range(4 * _RETRIES):
            num, cat = list(numeric), list(categorical)
            gene = self._rng.randint(codec.n_genes)
            if gene < len(num):
                width = 0.01 * 2 ** (attempt // 4)
                num[gene] = float(np.clip(num[gene] + self._rng.normal(0.0, width), 0.0, 1.0))
            elif codec.n_choices[gene - len(num)] > 1:
                cat[gene - len(num)] = int(self._rng.randint(codec.n_choices[gene - len(num)]))
            candidate = {**params, **codec.decode(num, cat)}
            if not self._dead_end(candidate, trial, taken):
                return candidate
        self._warn_once(", ".join(params))
        return params

    def _warn_once(self, names: str) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning(
                "every value of %s tried repeats a configuration some trial already has (a small "
                "space?); proposing a duplicate (this is said once)", names,
            )


def _n_values(dist: BaseDistribution) -> int | None:
    """How many values a distribution holds; None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    step = getattr(dist, "step", None)
    if step is None:
        return None
    return int(round((dist.high - dist.low) / step)) + 1   # type: ignore[attr-defined]


def _repeats(
    planned: dict[str, Any], suggested: dict[str, Any], taken: list[dict[str, Any]]
) -> bool:
    """Whether a trial that has ``suggested`` so far and plans ``planned`` (a superset) would end
    up with some taken configuration: one that covers what is suggested and agrees with the plan."""
    for other in taken:
        if suggested.keys() <= other.keys() <= planned.keys() and all(
            planned[k] == v for k, v in other.items()
        ):
            return True
    return False


__all__ = ["DistinctSampler"]
