"""The study as the report reads it: its trials read once, ranked best first, and sampled for big studies.

Owns: ``Snapshot`` (an ``optuna.Study`` whose trials are read from the store once), the order of the
complete trials (feasible first, then the Pareto front, then the first objective), and the seeded
sample of trials that scatter views draw once a study has more than ``MAX_SCATTER_TRIALS``.
Must not know about: plotly, the page.
"""
from __future__ import annotations

import copy
import math
import random
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import storage_of
from autotune.outcomes import is_feasible

MAX_SCATTER_TRIALS = 1000     # slice / parallel coordinates / Pareto: best ones plus a random sample
SAMPLE_SEED = 0               # the same study gives the same report


class Snapshot(optuna.Study):
    """The study with its trials read once (or a subset of them): optuna.visualization asks for the
    trials several times per figure, and each ask is a full read of the store."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial] | None = None) -> None:
        super().__init__(study_name=study.study_name, storage=storage_of(study))
        self._trials = trials if trials is not None else study.get_trials(deepcopy=False)
        self._front: list[FrozenTrial] | None = None     # computed once: each is O(trials^2) or a sort
        self._ranked: list[FrozenTrial] | None = None

    # Optuna reads trials through this private hook (autotune._optuna.TRIALS_HOOK, pinned there)
    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        if states is None:
            return list(self._trials)
        return [t for t in self._trials if t.state in states]

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return list(self._trials)

    @property
    def best_trial(self) -> FrozenTrial:
        return ranked(self, 1)[0]

    @property
    def best_trials(self) -> list[FrozenTrial]:
        if self._front is None:
            self._front = super().best_trials
        return self._front

    def subset(self, trials: list[FrozenTrial]) -> "Snapshot":
        view = Snapshot.__new__(Snapshot)
        view.__dict__.update(self.__dict__)
        view._trials, view._front, view._ranked = trials, None, None
        return view


def signs(study: optuna.Study) -> list[float]:
    """+1 for each minimized objective, -1 for each maximized one: ``sign * value`` is lower-is-better."""
    return [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and all(math.isfinite(v) for v in t.values)]


def ranked(study: optuna.Study, limit: int | None = None) -> list[FrozenTrial]:
    """Complete trials, best first: feasible ones (constraints, memory) first, then by the first
    objective, Pareto-front members first when several."""
    cached = getattr(study, "_ranked", None)
    if cached is None:
        s = signs(study)
        if len(s) > 1:
            front = {t.number for t in study.best_trials}
            key = lambda t: (not is_feasible(t), t.number not in front, s[0] * t.values[0])  # noqa: E731
        else:
            key = lambda t: (not is_feasible(t), s[0] * t.values[0])  # noqa: E731
        cached = sorted(completed(study), key=key)
        if isinstance(study, Snapshot):
            study._ranked = cached
    return cached[:limit]


def metrics_of(trial: FrozenTrial) -> dict[str, Any]:
    m = trial.user_attrs.get("metrics")
    return m if isinstance(m, dict) else {}


def sample(study: Snapshot, limit: int = MAX_SCATTER_TRIALS, keep: Sequence[FrozenTrial] = (),
           light: bool = True) -> Snapshot:
    """For scatter views: all trials when few; else ``keep``, the best ``limit // 5`` complete ones and
    a seeded random sample, ``limit`` in all. User attrs that are not scalars (the ``metrics`` dict,
    per-layer lists) are left out of the copies: optuna puts them in every point's hover text."""
    trials = study.get_trials(deepcopy=False)
    if len(trials) > limit:
        chosen = {t.number for t in keep} | {t.number for t in ranked(study, limit // 5)}
        rest = [t for t in trials if t.number not in chosen]
        chosen |= {t.number for t in random.Random(SAMPLE_SEED).sample(rest, max(0, limit - len(chosen)))}
        trials = [t for t in trials if t.number in chosen]
    return study.subset([_light(t) for t in trials] if light else trials)


def _light(trial: FrozenTrial) -> FrozenTrial:
    light = copy.copy(trial)
    light._user_attrs = {k: v for k, v in trial.user_attrs.items()
                         if isinstance(v, (str, int, float, bool)) or v is None}
    return light
