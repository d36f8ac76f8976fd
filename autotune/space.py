"""Search spaces: typed parameters -> Optuna distributions and suggestions.

Owns: turning ``Param`` (float/int with log and step, categorical, ``when`` conditions) into
``optuna.distributions`` and into ``trial.suggest_*`` calls in dependency order, so that a
conditional parameter is only suggested when its condition holds.
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

from typing import Any, Mapping

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
