"""Assembling a study from a spec: store, sampler, pruner, warm start, objective, and the run.

Owns: ``prepare(spec)`` (the study in its store, with the spec's sampler, pruner and warm start;
everything that can fail on bad input is checked before anything is written), ``start_workers(spec)``
(the run's workers, started before ``prepare`` so that their start overlaps it) and
``run(spec, study)`` (the scheduler with the spec's objective, search space, slots and budget).
The CLI and every bench script assemble studies here, so that a benchmark runs exactly what
``autotune run`` runs.
Must not know about: click, the terminal (errors are raised as ``StudyError``; the CLI prints them).

"""
from __future__ import annotations

from typing import Any

import optuna

from autotune.spec_types import StudySpec


class StudyError(ValueError):
    """The spec cannot be assembled into a study (the message names the file and the problem)."""


def sampler_for(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's optimizer with all its options."""
    from autotune.samplers import build_sampler
    try:
        return build_sampler(spec.optimizer.kind, seed=spec.optimizer.seed, **spec.optimizer.options_dict)
    except ValueError as exc:
        raise StudyError(f"{spec.path}: optimizer: {exc}") from exc


def prepare(spec: StudySpec, *, join_only: bool = False, create: bool = False) -> optuna.Study:
    """The spec's study, created or resumed, in an order that writes nothing until all checks passed.

    ``join_only``: join a study another process started (``autotune worker``): sample as that
    process does and write nothing, unless ``create`` and the store has no such study yet.
    Of processes that start a new study at the same moment, only its creator records its metrics
    and applies the warm start.
    """
    from autotune.pruners import build_pruner
    from autotune.store import create_or_load, open_storage, study_exists

    sampler = sampler_for(spec)
    pruner = build_pruner(spec.pruner, spec.trainer_dict.get("steps"))
    storage = open_storage(spec.storage)  # the scheduler opens its own, with heartbeats
    exists = study_exists(storage, spec.study)
    if join_only and not exists and not create:
        raise StudyError(f"no study {spec.study!r} to join in the store; start it with "
                         f"`autotune run {spec.path}` first (or pass --create)")
    join_only = join_only and exists
    apply_warm_start = None
    if join_only:
        from autotune.warmstart import prepare_join
        sampler = prepare_join(spec, storage, sampler)
    elif spec.warm_start is not None:
        from autotune.warmstart import prepare as prepare_warm_start
        sampler, apply_warm_start = prepare_warm_start(spec, storage, sampler)
    study, created = create_or_load(storage, spec.study, spec.directions, sampler=sampler, pruner=pruner)
    if created:
        study.set_metric_names(spec.metrics)
        study.set_user_attr("autotune", {"metrics": spec.metrics, "objective": spec.objective,
                                         "optimizer": spec.optimizer.kind, "pruner": spec.pruner.kind,
                                         "source": str(spec.path) if spec.path else None})
    if apply_warm_start is not None and (exists or created):
        apply_warm_start(study)
    return study


def start_workers(spec: StudySpec):
    """The spec's worker processes, started before its study is opened (``scheduler.start_workers``
    with the spec's objective and slots): ``run(..., started=)`` takes them over; ``stop()`` them
    when the run does not come (the study could not be opened)."""
    from autotune.objective import TrialObjective
    from autotune.scheduler import start_workers as start

    return start(spec.parallel, TrialObjective(spec, spec.storage))


def run(spec: StudySpec, study: optuna.Study, *, hard_stop: bool = False, progress: Any = None,
        started: Any = None):
    """Run ``study``'s trials on this machine's slots until the spec's budget is spent
    (``scheduler.run_study`` with the spec's objective, search space, slots and budget), on the
    workers ``start_workers(spec)`` started when ``started`` holds them."""
    from autotune import space
    from autotune.objective import TrialObjective
    from autotune.scheduler import run_study

    objective = started.objective if started is not None else TrialObjective(spec, spec.storage)
    return run_study(study, storage_url=spec.storage,
                     suggest=lambda trial: space.suggest(trial, spec.space), objective=objective,
                     parallel=spec.parallel, budget=spec.budget, hard_stop=hard_stop, progress=progress,
                     started=started)
