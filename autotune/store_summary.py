"""What ``status`` shows of the studies in a store, read without loading every trial: counts by
state and outcome, best values, time shares, stale RUNNING trials, sums of user attributes.

Must not know about: the model, the scheduler (it reads the grace period a scheduler recorded).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import optuna

from autotune import outcomes
from autotune._optuna import heartbeat_ages, study_id_of, trial_id_of, trial_tallies, trial_user_attr_json

GRACE_ATTR = "autotune:grace_period"   # trial system attr: its scheduler's grace period, s


def stale_running_trials(storage: optuna.storages.RDBStorage, study_id: int,
                         trials: Sequence[optuna.trial.FrozenTrial]) -> dict[int, float]:
    """Seconds without a heartbeat of each RUNNING trial whose scheduler's grace period has run
    out, by trial number: its scheduler died, and the next ``run`` or ``worker`` fails it.
    Reads only."""
    from autotune.spec_types import ParallelSpec
    ages = heartbeat_ages(storage, study_id)
    stale = {}
    for t in trials:
        age = ages.get(trial_id_of(t))
        if age is not None and age > t.system_attrs.get(GRACE_ATTR, ParallelSpec.grace_period):
            stale[t.number] = age
    return stale


def sum_trial_user_attr(storage: optuna.storages.RDBStorage, study_id: int, key: str) -> float:
    """Sum a numeric user attribute over all trials of a study (e.g. ``gpu_seconds``)."""
    return sum(trial_user_attr_values(storage, study_id, key))


def trial_user_attr_values(storage: optuna.storages.RDBStorage, study_id: int, key: str,
                           state: optuna.trial.TrialState | None = None) -> list[float]:
    """A numeric user attribute of every trial of a study (of those in ``state`` only, if given)
    that carries it, in one query (e.g. ``slot_seconds`` of the complete trials)."""
    values = []
    for value in trial_user_attr_json(storage, study_id, key, None if state is None else [state]):
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            pass
    return values


@dataclass(frozen=True)
class StudySummary:
    """What ``status`` lists of a study, read without loading its trials."""

    name: str
    directions: tuple[str, ...]
    counts: dict[str, int]          # state name -> trials
    best_values: tuple[float, ...] | None   # single objective only
    n_trials: int
    user_attrs: dict[str, Any]
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)   # outcomes.outcome_counts
    time_shares: dict[str, float] | None = None                          # outcomes.time_shares
    stale: dict[int, float] = dataclasses.field(default_factory=dict)   # see stale_running_trials


def summarize_studies(storage: optuna.storages.BaseStorage) -> list[StudySummary]:
    """Every study of the store, in creation order. On an RDB store the trials are counted by
    state and their ``time_s`` read in two queries for the whole store (``trial_tallies``);
    only the best trial and the running ones are loaded. Other storages: ``_summary_from_trials``,
    the plain reference that the tests compare it with."""
    frozen = storage.get_all_studies()
    if not isinstance(storage, optuna.storages.RDBStorage):
        return [_summary_from_trials(storage, s) for s in frozen]
    tallies = trial_tallies(storage)
    out = []
    for s in frozen:
        counts, outcome_counts, time_parts = tallies.get(study_id_of(s), ({}, {}, []))
        best = None
        if len(s.directions) == 1 and counts.get("COMPLETE"):
            best = tuple(optuna.load_study(study_name=s.study_name, storage=storage).best_trial.values)
        stale = {}
        if counts.get("RUNNING"):
            running = storage.get_all_trials(study_id_of(s), deepcopy=False,
                                             states=(optuna.trial.TrialState.RUNNING,))
            stale = stale_running_trials(storage, study_id_of(s), running)
        out.append(StudySummary(s.study_name, tuple(d.name.lower() for d in s.directions), counts,
                                best, sum(counts.values()), dict(s.user_attrs),
                                outcomes.in_order(outcome_counts), outcomes.shares_of(time_parts), stale))
    return out


def _summary_from_trials(storage: optuna.storages.BaseStorage,
                         frozen: optuna.study.FrozenStudy) -> StudySummary:
    """``summarize_studies`` of one study the plain way: from all its trials."""
    study = optuna.load_study(study_name=frozen.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best = None
    if len(study.directions) == 1 and counts.get("COMPLETE"):
        best = tuple(study.best_trial.values)
    return StudySummary(frozen.study_name, tuple(d.name.lower() for d in study.directions), counts,
                        best, len(trials), dict(study.user_attrs), outcomes.outcome_counts(trials),
                        outcomes.time_shares(trials))
