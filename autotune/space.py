"""Search spaces: typed parameters -> Optuna distributions and suggestions.

Owns: turning ``Param`` (float/int with log and step, categorical, ``when`` conditions) into
``optuna.distributions`` and into ``trial.suggest_*`` calls in dependency order, so that a
conditional parameter is only suggested when its condition holds; and the one encoding of a
parameter value to the unit interval and back (``to_unit`` / ``from_unit``), which the
evolutionary and hybrid samplers and the warm start share.
Must not know about: how trials run, the model.

Example::

    >>> from autotune.spec_types import Param, SearchSpace
    >>> space = SearchSpace((Param("attention", "categorical", choices=("dense", "sparse")),
    ...                      Param("keep_ratio", "float", low=0.2, high=0.8,
    ...                            when=(("attention", ("sparse",)),))))
    >>> sorted(distributions(space))
    ['attention', 'keep_ratio']
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)

from autotune.spec_types import Param, SearchSpace


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of one parameter."""
    if param.type == "float":
        return FloatDistribution(float(param.low), float(param.high), log=param.log,
                                 step=None if param.step is None else float(param.step))
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log,
                               step=1 if param.step is None else int(param.step))
    return CategoricalDistribution(list(param.choices))


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Every parameter's distribution, conditional ones included."""
    return {p.name: distribution(p) for p in space.params}


def is_active(param: Param, values: Mapping[str, Any]) -> bool:
    """True when each of ``param``'s conditions holds for the values chosen so far."""
    for other, allowed in param.when:
        if other not in values or values[other] not in allowed:
            return False
    return True


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace) -> dict[str, Any]:
    """Suggest every active parameter; ``space.params`` is in dependency order (spec.py sorts it)."""
    values: dict[str, Any] = {}
    for param in space.params:
        if not is_active(param, values):
            continue
        values[param.name] = _suggest_one(trial, param)
    return values


def _suggest_one(trial: optuna.trial.BaseTrial, param: Param) -> Any:
    if param.type == "float":
        return trial.suggest_float(param.name, float(param.low), float(param.high),
                                   log=param.log, step=param.step)
    if param.type == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log,
                                 step=1 if param.step is None else int(param.step))
    return trial.suggest_categorical(param.name, list(param.choices))


# --- the unit interval ------------------------------------------------------------------------
# A numeric value maps linearly (log-scaled where the distribution is log) onto [0, 1]; an int or
# a stepped float is widened by half a step at each end first, so that every value of the grid
# owns an equal share of the interval. This is the scaling of Optuna's GP search space
# (optuna._gp.search_space), which the hybrid sampler's local search runs in; tests pin the two.
# A categorical's choice i of n owns [i/n, (i+1)/n) and encodes as its middle, (i + 0.5) / n.


def to_unit(dist: BaseDistribution, value: Any) -> float:
    """``value`` of ``dist`` as a point of [0, 1] (values outside the range clamped onto it).

    >>> to_unit(IntDistribution(1, 4), 1), round(to_unit(FloatDistribution(1e-4, 1e-2, log=True), 1e-3), 9)
    (0.125, 0.5)
    """
    if isinstance(dist, CategoricalDistribution):
        index = choice_index(dist.choices, value)
        if index is None:
            raise ValueError(f"{value!r} is not one of {dist.choices}")
        return (index + 0.5) / len(dist.choices)
    lo, hi, is_log = _unit_scale(dist)
    if hi == lo:
        return 0.5
    x = math.log(value) if is_log else float(value)
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """The value of ``dist`` at ``u`` (clamped onto [0, 1]): on its int or step grid, within its
    bounds; an ``int`` for an IntDistribution, a ``float`` for a FloatDistribution."""
    u = min(1.0, max(0.0, float(u)))
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(len(dist.choices) - 1, int(u * len(dist.choices)))]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    lo, hi, is_log = _unit_scale(dist)
    x = lo + u * (hi - lo)
    if is_log:
        x = math.exp(x)
    low, high, step = dist.low, dist.high, dist.step
    if step is not None:
        x = low + round((x - low) / step) * step
    x = min(high, max(low, x))
    if isinstance(dist, IntDistribution):
        return int(round(x))
    if step is not None:   # keep stepped floats on their grid despite float error
        decimals = max(0, -int(math.floor(math.log10(step))) + 6) if step > 0 else 12
        x = round(x, decimals)
    return float(x)


def snap_to_grid(dist: BaseDistribution, u: np.ndarray) -> np.ndarray:
    """``to_unit(dist, from_unit(dist, v))`` for each ``v`` of ``u``, vectorized: the points of a
    numeric distribution's grid (ints, steps) nearest ``u``; continuous floats unchanged (clamped)."""
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    lo, hi, is_log = _unit_scale(dist)
    if (dist.step is None and not isinstance(dist, IntDistribution)) or hi == lo:
        return u if hi != lo else np.full_like(u, 0.5)
    x = lo + u * (hi - lo)
    if is_log:
        x = np.exp(x)
    step = dist.step or 1
    x = np.clip(dist.low + np.round((x - dist.low) / step) * step, dist.low, dist.high)
    return np.clip(((np.log(x) if is_log else x) - lo) / (hi - lo), 0.0, 1.0)


def choice_index(choices: Sequence[Any], value: Any) -> int | None:
    """The index of ``value`` among ``choices`` (of the same type first: ``True`` is not ``1``),
    or None."""
    for i, choice in enumerate(choices):
        if choice == value and type(choice) is type(value):
            return i
    for i, choice in enumerate(choices):
        if choice == value:
            return i
    return None


def _unit_scale(dist: BaseDistribution) -> tuple[float, float, bool]:
    """(low, high, log) of what [0, 1] maps onto, in the parameter's own scale (log where log)."""
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    low, high = float(dist.low), float(dist.high)
    half = 0.5 * dist.step if dist.step is not None else 0.0   # IntDistribution: step >= 1
    low, high = low - half, high + half
    if dist.log:
        return math.log(low), math.log(high), True
    return low, high, False
