"""Carrying one earlier trial's parameters into a new search space.

Owns: the rules by which a parameter value recorded under an earlier study's space becomes a value
of the new space (clip or drop out-of-range values, round to int/step grids, drop categorical values
that are no longer choices, drop parameters whose ``when`` condition is false), and how much two
spaces overlap (for ``warm_start: {from: [auto]}``).
Must not know about: the model, storages, strategies.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Mapping

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from autotune import space as space_module
from autotune.spec_types import SearchSpace

_DROP = object()   # a value that cannot be carried


def carry_params(
    params: Mapping[str, Any],
    space: SearchSpace,
    dists: Mapping[str, BaseDistribution],
    out_of_range: Literal["clip", "drop"],
) -> dict[str, Any]:
    """The subset of ``params`` (an earlier trial's) that is valid in the new space.

    Parameters new to the space are absent (the new sampler fills them); a parameter whose
    ``when`` condition names a parent that was not carried, or holds for none of its values,
    is dropped, so that a carried configuration is one the new space could have produced.
    """
    carried = {}
    for name, dist in dists.items():
        if name in params:
            value = carry_value(params[name], dist, out_of_range)
            if value is not _DROP:
                carried[name] = value
    params_by_name = {p.name: p for p in space.params}
    changed = True
    while changed:  # dropping a parent can deactivate its children, and theirs
        changed = False
        for name in list(carried):
            if not space_module.is_active(params_by_name[name], carried):
                del carried[name]
                changed = True
    return carried


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a boolean choice must not match the number 1.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def carry_value(value: Any, dist: BaseDistribution, out_of_range: str) -> Any:
    """``value`` as a member of ``dist``, or ``_DROP``."""
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if _same(value, c)), _DROP)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return _DROP
    low, high = dist.low, dist.high   # Optuna has already moved `high` onto the step grid
    if value < low or value > high:
        if out_of_range == "drop":
            return _DROP
        value = min(max(value, low), high)
    step = dist.step if dist.step is not None else (1 if isinstance(dist, IntDistribution) else None)
    if step is not None:
        k = round((value - low) / step)
        value = min(low + k * step, high)
        if isinstance(dist, FloatDistribution):
            value = float(round(value, 12))   # keep on the grid despite float noise
    if isinstance(dist, IntDistribution):
        return int(value)
    return float(value)


def space_overlap(dists: Mapping[str, BaseDistribution],
                  seen: Mapping[str, set[type]]) -> float:
    """How much an earlier study's space (``seen``: parameter name -> distribution kinds of its
    trials) overlaps the new one: shared names over all names, a shared name counting half when
    its kind changed (say, a float that became categorical). 0.0 (nothing) to 1.0 (same)."""
    names = set(dists) | set(seen)
    if not names:
        return 0.0
    score = 0.0
    for name in set(dists) & set(seen):
        score += 1.0 if type(dists[name]) in seen[name] else 0.5
    return score / len(names)
