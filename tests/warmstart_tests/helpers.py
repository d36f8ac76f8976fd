"""Builders for warm-start tests: earlier studies made of explicit trials, specs, parameters."""
from __future__ import annotations

from typing import Any, Sequence

import optuna

from autotune import space
from autotune.spec_types import ObjectiveSpec, Param, SearchSpace, StudySpec, WarmStartSpec


def add_source(storage, name: str, space_: SearchSpace, rows: Sequence[tuple[dict[str, Any], Any]],
               directions: Sequence[str] = ("minimize",)) -> optuna.Study:
    """An earlier study whose COMPLETE trials have the given (params, value or values)."""
    study = optuna.create_study(storage=storage, study_name=name, directions=list(directions))
    dists = space.distributions(space_)
    for params, values in rows:
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={n: dists[n] for n in params}, values=values))
    return study


def make_spec(url: str, space_: SearchSpace, *, study: str = "new", sources=("old",),
              directions: Sequence[str] = ("minimize",), **warm: Any) -> StudySpec:
    return StudySpec(
        path=None, study=study, storage=url, space=space_,
        objectives=tuple(ObjectiveSpec(f"m{i}", d) for i, d in enumerate(directions)),
        warm_start=WarmStartSpec(sources=tuple(sources), **warm))


def fl(name: str, low: float, high: float, **kw: Any) -> Param:
    return Param(name, "float", low=low, high=high, **kw)


def it(name: str, low: int, high: int, **kw: Any) -> Param:
    return Param(name, "int", low=low, high=high, **kw)


def cat(name: str, *choices: Any, **kw: Any) -> Param:
    return Param(name, "categorical", choices=tuple(choices), **kw)
