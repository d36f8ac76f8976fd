"""Pruned trials as a model of complete trials sees them.

Owns: ``pruned_scores`` (where pruned trials rank below the complete ones, as Optuna's TPE orders
them) and ``PrunedAsComplete``, a sampler wrapper that shows its inner sampler (Optuna's
``GPSampler``, which models complete trials only) each pruned trial as a complete one at that
imputed value, so that a region whose trials are pruned loses its promise instead of being
proposed again. The hybrid sampler uses ``pruned_scores`` directly.
Must not know about: the model, the scheduler, the spec.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import StudyView


def pruned_scores(
    pruned: Sequence[FrozenTrial], score: np.ndarray, directions: Sequence[StudyDirection]
) -> np.ndarray:
    """Scores of pruned trials, below every complete trial's ``score`` (higher is better), as
    Optuna's TPE ranks them: a trial pruned at a later step above one pruned earlier, and at the
    same step the better last reported value (of the first objective) above the worse. They span
    0.1 to 1 times the complete trials' range below the worst complete trial.

    Example:
        >>> import optuna
        >>> def pruned_at(step, value):
        ...     return optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
        ...         params={}, distributions={}, intermediate_values={step: value})
        >>> pruned_scores([pruned_at(1, 5.0), pruned_at(3, 9.0)], np.array([-2.0, -1.0]),
        ...               [StudyDirection.MINIMIZE]).round(2).tolist()
        [-3.0, -2.1]
    """
    if not pruned:
        return np.zeros(0)
    sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0

    def rank_key(t: FrozenTrial) -> tuple[float, float]:
        if not t.intermediate_values:
            return (-1.0, -np.inf)
        step = max(t.intermediate_values)
        value = sign * float(t.intermediate_values[step])
        return (float(step), value if np.isfinite(value) else -np.inf)

    order = sorted(range(len(pruned)), key=lambda i: rank_key(pruned[i]), reverse=True)   # best first
    low = float(score.min())
    span = float(score.max()) - low
    span = span if span > 1e-12 else 1.0
    out = np.empty(len(pruned))
    for k, i in enumerate(order):
        out[i] = low - span * (0.1 + 0.9 * k / max(len(pruned) - 1, 1))
    return out


def shown_as_complete(trials: Sequence[FrozenTrial],
                      directions: Sequence[StudyDirection]) -> list[FrozenTrial]:
    """``trials`` with each pruned trial replaced by a COMPLETE copy at its ``pruned_scores``
    value, once two complete trials with finite values set the scale; unchanged for several
    objectives. With constraints, a pruned trial shows only if it stored the same constraint
    names as the complete trials (autotune stores them before pruning), so that the sampler's
    constraint model sees one shape."""
    if len(directions) != 1:
        return list(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and np.isfinite(t.values[0])]
    if len(complete) < 2:
        return list(trials)
    names = set(complete[0].constraints)
    pruned = [t for t in trials if t.state == TrialState.PRUNED and set(t.constraints) == names]
    if not pruned:
        return list(trials)
    sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0
    imputed = sign * pruned_scores(pruned, sign * np.array([t.values[0] for t in complete]), directions)
    shown = {}
    for t, value in zip(pruned, imputed):
        c = copy.copy(t)
        c.state = TrialState.COMPLETE
        c.values = [float(value)]
        shown[t.number] = c
    return [shown.get(t.number, t) if t.state == TrialState.PRUNED else t for t in trials]


class _StudyView(StudyView):
    """The study with its pruned trials shown as complete (``shown_as_complete``) when a sampler
    lists trials; everything else (storage, directions, attributes) is the real study's."""

    def _shown(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return shown_as_complete(trials, self._study.directions)


class PrunedAsComplete(BaseSampler):
    """Wraps ``inner`` (a sampler that models complete trials only, such as Optuna's
    ``GPSampler``) so that its model also sees pruned trials, below every complete one.

    Example:
        >>> import optuna
        >>> sampler = PrunedAsComplete(optuna.samplers.GPSampler(seed=0))
        >>> study = optuna.create_study(sampler=sampler)
    """

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(_StudyView(study), trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(_StudyView(study), trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


__all__ = ["PrunedAsComplete", "pruned_scores", "shown_as_complete"]
