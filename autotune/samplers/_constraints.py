"""Constraint values of trials, as our samplers rank them.

Owns: ``penalized_values``: infeasible trials below every feasible one, ordered by their total
violation. Constraint values are what trials set through Optuna's public ``Trial.set_constraint``
and read back as ``FrozenTrial.constraints`` (<= 0: satisfied), the same values Optuna's TPE, GP
and NSGA-II use.
Must not know about: metrics, the spec, the model.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial


def total_violation(trial: FrozenTrial) -> float:
    """Sum of the positive constraint values; 0 for a feasible trial or one without constraints."""
    return float(sum(max(0.0, v) for v in trial.constraints.values()))


def penalized_values(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
) -> np.ndarray:
    """(n, n_objectives) objective values in which each infeasible trial is worse, in every
    objective, than every feasible trial, and the more so the larger its total violation.

    So any ranking by these values (best value, non-domination) puts feasible trials first and
    orders infeasible ones by violation. Without infeasible trials the values are unchanged.
    """
    values = np.array([t.values for t in trials], dtype=float).reshape(len(trials), len(directions))
    violation = np.array([total_violation(t) for t in trials])
    infeasible = violation > 0
    if not infeasible.any():
        return values
    sign = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions])
    loss = np.where(np.isfinite(values), values * sign, np.nan)   # lower is better everywhere
    reference = loss[~infeasible] if (~infeasible).any() else loss
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column: nanmax says so
        worst = np.nan_to_num(np.nanmax(reference, axis=0))
        span = np.nan_to_num(np.nanmax(loss, axis=0) - np.nanmin(loss, axis=0))
    span = np.maximum(span, 1e-12)
    scale = violation / violation.max()                            # in (0, 1] where infeasible
    penalized = worst + span * (1.0 + scale[:, None])
    return np.where(infeasible[:, None], penalized * sign, values)


__all__ = ["penalized_values", "total_violation"]
