"""Constraint values of trials, as Optuna's samplers store and read them.

Owns: the one place that touches Optuna's private constraint storage (the trial system attr
``optuna.samplers._base._CONSTRAINTS_KEY``, written by ``_process_constraints_after_trial``),
and the ranking our samplers use: infeasible trials below every feasible one, ordered by their
total violation (``penalized_values``). A constraint value <= 0 means satisfied (Optuna's rule).
Must not know about: metrics, the spec, the model.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from optuna.samplers import _base as _optuna_sampler_base
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

ConstraintsFunc = Callable[[FrozenTrial], Sequence[float]]

# Private in Optuna 5.1; tests/samplers_tests/test_constraints.py pins both names.
CONSTRAINTS_KEY: str = _optuna_sampler_base._CONSTRAINTS_KEY


def record_constraints(
    constraints_func: ConstraintsFunc, study: Study, trial: FrozenTrial, state: TrialState
) -> None:
    """Store ``constraints_func(trial)`` where Optuna's samplers read it (COMPLETE / PRUNED only),
    as ``BaseSampler.after_trial`` of the samplers that take ``constraints_func`` does."""
    _optuna_sampler_base._process_constraints_after_trial(constraints_func, study, trial, state)


def constraint_values(trial: FrozenTrial) -> tuple[float, ...] | None:
    """The trial's stored constraint values, or None when none were stored."""
    values = trial.system_attrs.get(CONSTRAINTS_KEY)
    return None if values is None else tuple(float(v) for v in values)


def total_violation(trial: FrozenTrial) -> float:
    """Sum of the positive constraint values; 0 for a feasible trial or one without constraints."""
    values = constraint_values(trial)
    return 0.0 if values is None else float(sum(max(0.0, v) for v in values))


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
    loss = values * sign                                   # lower is better in every column
    finite = np.where(np.isfinite(loss), loss, np.nan)
    reference = finite[~infeasible] if (~infeasible).any() else finite
    worst = np.nanmax(reference, axis=0) if np.isfinite(reference).any() else np.zeros(len(directions))
    worst = np.nan_to_num(worst)
    span = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0) if np.isfinite(finite).any() else 0.0
    span = np.maximum(np.nan_to_num(span), 1e-12) * np.ones(len(directions))
    scale = violation / max(float(violation.max()), 1e-12)   # in (0, 1] for infeasible trials
    penalized = worst + span * (1.0 + scale[:, None])
    loss = np.where(infeasible[:, None], penalized, loss)
    return loss * sign


__all__ = ["CONSTRAINTS_KEY", "ConstraintsFunc", "constraint_values", "penalized_values",
           "record_constraints", "total_violation"]
