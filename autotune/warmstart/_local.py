"""The ``local`` warm-start strategy: a local search from the sources' best, then the ``prior``.

Owns: ``LocalSearchSampler``, a ``PriorSampler`` whose first trials (by trial number) are a (1+1)
evolution strategy instead of the inner sampler's choice:
- the study's first trial re-evaluates the sources' best configuration;
- each later one steps from the *incumbent* (the best COMPLETE own trial so far; the sources' best
  while there is none). A step is one of two moves, so that a gain in one part is not hidden by a
  loss in the other:
  - a continuous move: every numeric parameter of more than 16 values moves by a normal step in its
    normalized range, whose size starts at the spread of the sources' best 10% of trials (0.02 to
    0.2 of the range) and grows after a continuous move that improved on the incumbent, shrinks
    after one that did not (the 1/5 success rule); discrete parameters keep their values;
  - a discrete move (probability 0.5, while one is left): one discrete parameter (a categorical, or
    an int / stepped one of at most 16 values) takes a neighbouring value (another choice, one
    grid step up or down) that no own trial has tried beside the incumbent's other discrete
    values; everything else keeps its value. Trials asked together take different neighbours.
  Parameters the incumbent lacks (new to this study, or inactive there) come from the inner sampler.
A trial decides once, when it starts, whether it is local: it is while the sources still rank the
study's own results better than chance (``relevance`` >= 0.3), so that an unrelated source does not
hold the study in the wrong place, and its number is below ``local_trials`` or, up to
``3 * local_trials``, the incumbent is one of the last 10 trials (the search is still improving).
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

from autotune.space import from_unit, to_unit
from autotune.warmstart._prior import PriorSampler, _fits
from autotune.warmstart._transfer import carry_value

_RELEVANCE_TO_STAY = 0.3     # below it, the sources no longer choose where to search
_TOP_SHARE, _MIN_TOP = 0.1, 3          # the sources' best trials whose spread sets the first steps
_STEP_BOUNDS = (0.02, 0.2)            # first step sizes, as shares of a parameter's range
_NEW_PARAM_STEP = 0.1                  # first step of a parameter the sources lack
_MAX_GROWTH = 4.0                      # steps grow at most this much over the first ones
_GRID_STEPS = 0.6                      # an int / stepped parameter moves at least this many steps (s.d.)
_CHANGE_CHOICE = 0.2                   # probability that perturb changes a categorical value
_DISCRETE_LEVELS = 16                  # an int / stepped parameter of at most this many values is discrete
_DISCRETE_MOVE = 0.5                   # probability that a step is a discrete move, while one is left
_PATIENCE = 10                         # past local_trials: local while the best is one of the last 10
_MAX_LOCAL = 3                         # ... and for at most 3 * local_trials trials in all


@dataclass(frozen=True)
class _Plan:
    center: dict[str, Any]   # values to start from, by parameter name
    exact: bool              # the first trial: the center itself
    growth: float            # step sizes over the first ones (1/5 success rule)
    discrete: frozenset[str] = frozenset()   # the center's discrete parameters (held in a step)
    change: tuple[str, Any] | None = None    # a discrete move: this parameter takes this value


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
        if self.best_source is not None and trial.number < _MAX_LOCAL * self.local_trials:
            own = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
            complete = [t for t in own if t.state == TrialState.COMPLETE and t.values]
            if (self._cached_relevance(complete) >= _RELEVANCE_TO_STAY
                    and (trial.number < self.local_trials or self._improving(complete, trial.number))):
                self._plans[trial.number] = self._plan(own, complete, trial.number)
        super().before_trial(study, trial)

    def _improving(self, complete: list[FrozenTrial], number: int) -> bool:
        """Whether the best own trial is one of the last ``_PATIENCE`` before ``number``."""
        if not complete:
            return False
        best = min(complete, key=lambda t: (self._sign * t.values[0], t.number))
        return best.number >= number - _PATIENCE

    def _plan(self, own: list[FrozenTrial], complete: list[FrozenTrial], number: int) -> _Plan:
        center = dict(self.best_source.params)
        dists = dict(self.best_source.distributions)
        best, growth = None, 1.0
        for t in sorted(complete, key=lambda t: t.number):
            if best is None or self._sign * t.values[0] < self._sign * best.values[0]:
                growth *= math.exp(1 / 3) if best is not None else 1.0
                best = t
            elif _same_discrete(t, best):    # a discrete move that failed says nothing of steps
                growth *= math.exp(-1 / 12)
        if best is not None:
            center.update(best.params)
            dists.update(best.distributions)
        discrete = frozenset(n for n in center if n in dists and is_discrete(dists[n]))
        if not own:
            return _Plan(center, exact=True, growth=1.0, discrete=discrete)
        growth = min(growth, _MAX_GROWTH)
        untried = [m for m in _neighbours(center, dists, discrete) if not _tried(own, center, discrete, m)]
        coin = np.random.RandomState(zlib.crc32(f"{self._seed}:{number}:move".encode())).uniform()
        if not untried or (set(center) - discrete and coin >= _DISCRETE_MOVE):
            return _Plan(center, exact=False, growth=growth, discrete=discrete)
        # One order for all trials asked while the same trials are finished (parallel workers),
        # each taking the move at its own number: they do not all try the same neighbour.
        order = np.random.RandomState(zlib.crc32(f"{self._seed}:{len(complete)}:order".encode()))
        move = untried[order.permutation(len(untried))[number % len(untried)]]
        return _Plan(center, exact=False, growth=growth, discrete=discrete, change=move)

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
        if plan.change is not None and plan.change[0] == param_name:
            return plan.change[1] if _fits(param_distribution, plan.change[1]) else value
        if plan.exact or plan.change is not None or param_name in plan.discrete:
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
    u = to_unit(dist, value) + step * rng.normal()
    return from_unit(dist, -u if u < 0 else (2.0 - u if u > 1 else u))


def _spread(top: list[FrozenTrial]) -> dict[str, float]:
    """First step size per numeric parameter: the s.d. of ``top``'s values, as a share of the range."""
    out: dict[str, float] = {}
    for name in sorted({n for t in top for n in t.params}):
        dist = next(t.distributions[name] for t in top if name in t.distributions)
        if isinstance(dist, CategoricalDistribution):
            continue
        units = [to_unit(dist, t.params[name]) for t in top if name in t.params]
        spread = float(np.std(units)) if len(units) > 1 else _STEP_BOUNDS[1]
        out[name] = min(max(spread, _STEP_BOUNDS[0]), _STEP_BOUNDS[1])
    return out


def is_discrete(dist: BaseDistribution) -> bool:
    """A categorical, or an int / stepped parameter of at most ``_DISCRETE_LEVELS`` values: one
    whose smallest move is a jump, searched one parameter at a time."""
    if isinstance(dist, CategoricalDistribution):
        return True
    grid = dist.step if dist.step is not None else (1 if isinstance(dist, IntDistribution) else None)
    return grid is not None and (dist.high - dist.low) / grid + 1 <= _DISCRETE_LEVELS


def _neighbours(center: dict[str, Any], dists: dict[str, BaseDistribution],
                discrete: frozenset[str]) -> list[tuple[str, Any]]:
    """(parameter, value): every other choice of a categorical, one grid step up or down of an int."""
    out = []
    for name in sorted(discrete):
        dist, value = dists[name], center[name]
        if isinstance(dist, CategoricalDistribution):
            out += [(name, c) for c in dist.choices if c != value]
            continue
        grid = dist.step if dist.step is not None else 1
        out += [(name, carry_value(v, dist, "clip")) for v in (value - grid, value + grid)
                if dist.low <= v <= dist.high]
    return out


def _tried(own: list[FrozenTrial], center: dict[str, Any], discrete: frozenset[str],
           move: tuple[str, Any]) -> bool:
    """Whether an own trial already had the center's discrete values but for ``move``."""
    want = {n: center[n] for n in discrete}
    want[move[0]] = move[1]
    return any(all(t.params.get(n) == v for n, v in want.items()) for t in own)


def _same_discrete(a: FrozenTrial, b: FrozenTrial) -> bool:
    names = {n for n, d in a.distributions.items() if is_discrete(d)}
    names |= {n for n, d in b.distributions.items() if is_discrete(d)}
    return all(a.params.get(n) == b.params.get(n) for n in names)
