"""The ``local`` warm-start strategy: a local search from the sources' best, then the ``prior``.

Owns: ``LocalSearchSampler``, a ``PriorSampler`` whose first ``local_trials`` trials (by trial
number) are a (1+1) evolution strategy instead of the inner sampler's choice:
- the study's first trial re-evaluates the sources' best configuration;
- each later one perturbs the *incumbent* (the best COMPLETE own trial so far; the sources' best
  while there is none) in the normalized space of each parameter: a numeric parameter moves by
  a normal step whose size starts at the spread of the sources' best 10% of trials (0.02 to 0.2 of
  the range) and grows after a trial that improved on the incumbent, shrinks after one that did
  not (the 1/5 success rule); an int or stepped parameter moves by at least about half a grid step,
  so that a coarse grid is not frozen; a categorical value changes with probability 0.2;
  parameters the incumbent lacks (new to this study, or inactive there) come from the inner sampler.
A trial decides once, when it starts, whether it is local: it is when its number is below
``local_trials`` and the sources still rank the study's own results better than chance
(``relevance`` >= 0.3), so that an unrelated source does not hold the study in the wrong place.
All other trials are the ``prior`` strategy's: the inner sampler sees the source trials, fading,
beside the own trials, local ones included. Single objective only.
Must not know about: the model, storages, how the trials were carried.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from autotune._warmstart_prior import PriorSampler, _fits, _unit
from autotune._warmstart_transfer import carry_value

_RELEVANCE_TO_STAY = 0.3     # below it, the sources no longer choose where to search
_TOP_SHARE, _MIN_TOP = 0.1, 3          # the sources' best trials whose spread sets the first steps
_STEP_BOUNDS = (0.02, 0.2)            # first step sizes, as shares of a parameter's range
_NEW_PARAM_STEP = 0.1                  # first step of a parameter the sources lack
_MAX_GROWTH = 4.0                      # steps grow at most this much over the first ones
_GRID_STEPS = 0.6                      # an int / stepped parameter moves at least this many steps (s.d.)
_CHANGE_CHOICE = 0.2                   # probability that a categorical value changes


@dataclass(frozen=True)
class _Plan:
    center: dict[str, Any]   # values to start from, by parameter name
    exact: bool              # the first trial: the center itself
    growth: float            # step sizes over the first ones (1/5 success rule)


class LocalSearchSampler(PriorSampler):
    """``PriorSampler`` with a local search for the first ``local_trials`` trials.

    ``source_trials``: as for ``PriorSampler``; ``direction``: the study's one direction.
    Example::

        sampler = LocalSearchSampler(optuna.samplers.TPESampler(seed=0), carried_trials,
                                     local_trials=15, direction="minimize")
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=50)   # trial 0: the sources' best configuration
    """

    def __init__(self, inner: BaseSampler, source_trials: Sequence[FrozenTrial], *,
                 local_trials: int = 15, direction: str = "minimize", fade_trials: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(inner, source_trials, fade_trials=fade_trials, seed=seed)
        self.local_trials = local_trials
        self._sign = -1.0 if direction.lower() == "maximize" else 1.0
        ranked = sorted(self.complete_sources, key=lambda t: self._sign * t.values[0])
        self.best_source = ranked[0] if ranked else None
        self.first_steps = _spread(ranked[:max(_MIN_TOP, round(_TOP_SHARE * len(ranked)))])
        self._seed = seed
        self._plans: dict[int, _Plan] = {}   # trial number -> its plan, for local trials only

    def is_local(self, trial: FrozenTrial) -> bool:
        return trial.number in self._plans

    def before_trial(self, study, trial):  # noqa: ANN001, ANN201
        self._plans.pop(trial.number, None)
        if trial.number < self.local_trials and self.best_source is not None:
            own = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
            complete = [t for t in own if t.state == TrialState.COMPLETE and t.values]
            if self._cached_relevance(complete) >= _RELEVANCE_TO_STAY:
                self._plans[trial.number] = self._plan(own, complete)
        super().before_trial(study, trial)

    def _plan(self, own: list[FrozenTrial], complete: list[FrozenTrial]) -> _Plan:
        center = dict(self.best_source.params)
        best, growth = None, 1.0
        for t in sorted(complete, key=lambda t: t.number):
            if best is None or self._sign * t.values[0] < self._sign * best.values[0]:
                growth *= math.exp(1 / 3) if best is not None else 1.0
                best = t
            else:
                growth *= math.exp(-1 / 12)
        if best is not None:
            center.update(best.params)
        return _Plan(center, exact=not own, growth=min(growth, _MAX_GROWTH))

    def infer_relative_search_space(self, study, trial):  # noqa: ANN001, ANN201
        if self.is_local(trial):
            return {}
        return super().infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # noqa: ANN001, ANN201
        if self.is_local(trial):
            return {}
        return super().sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: ANN001, ANN201
        plan = self._plans.get(trial.number)
        value = plan.center.get(param_name, None) if plan is not None else None
        if plan is None or param_name not in plan.center or not _fits(param_distribution, value):
            return super().sample_independent(study, trial, param_name, param_distribution)
        if plan.exact:
            return value
        rng = np.random.RandomState(zlib.crc32(f"{self._seed}:{trial.number}:{param_name}".encode()))
        step = self.first_steps.get(param_name, _NEW_PARAM_STEP) * plan.growth
        return perturb(param_distribution, value, step, rng)


def perturb(dist: BaseDistribution, value: Any, step: float, rng: np.random.RandomState) -> Any:
    """A value of ``dist`` near ``value``: a normal step of s.d. ``step`` (a share of the range,
    on the log scale where ``dist`` is), reflected at the bounds, put back on the int/step grid."""
    if isinstance(dist, CategoricalDistribution):
        others = [c for c in dist.choices if c != value]
        if others and rng.uniform() < _CHANGE_CHOICE:
            return others[rng.randint(len(others))]
        return value
    grid = dist.step if dist.step is not None else (1 if isinstance(dist, IntDistribution) else None)
    if grid is not None and not dist.log:
        step = max(step, _GRID_STEPS * grid / max(float(dist.high - dist.low), grid))
    u = _unit(dist, value) + step * rng.normal()
    u = min(max(-u if u < 0 else (2.0 - u if u > 1 else u), 0.0), 1.0)
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        raw = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        raw = low + u * (high - low)
    return carry_value(raw, dist, "clip")


def _spread(top: list[FrozenTrial]) -> dict[str, float]:
    """First step size per numeric parameter: the s.d. of ``top``'s values, as a share of the range."""
    out: dict[str, float] = {}
    for name in sorted({n for t in top for n in t.params}):
        dist = next(t.distributions[name] for t in top if name in t.distributions)
        if isinstance(dist, CategoricalDistribution):
            continue
        units = [_unit(dist, t.params[name]) for t in top if name in t.params]
        spread = float(np.std(units)) if len(units) > 1 else _STEP_BOUNDS[1]
        out[name] = min(max(spread, _STEP_BOUNDS[0]), _STEP_BOUNDS[1])
    return out
