"""Early stopping: a study spec's ``pruner:`` block -> one of Optuna's pruners.

Owns: the mapping of ``PrunerSpec`` (none | median | percentile | sha | hyperband) onto Optuna's
pruner classes, with steps counted in trainer steps (the ``step`` that ``report(step, metrics)``
passes). All pruners read the other trials' curves from the study's storage, so they work the same
with one worker or many.
Must not know about: the model, the scheduler.
"""
from __future__ import annotations

import optuna

from autotune.spec_types import PRUNER_KINDS, PrunerSpec


def build_pruner(pruner_spec: PrunerSpec, steps: int | None) -> optuna.pruners.BasePruner:
    """The Optuna pruner for ``pruner_spec``; ``steps`` is the trainer's step count (hyperband's
    default ``max_resource``).

    >>> build_pruner(PrunerSpec(kind="median", min_steps=50), steps=600).__class__.__name__
    'MedianPruner'
    """
    kind = pruner_spec.kind
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner_spec.startup_trials, n_warmup_steps=pruner_spec.min_steps,
            interval_steps=pruner_spec.interval_steps)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(
            pruner_spec.percentile, n_startup_trials=pruner_spec.startup_trials,
            n_warmup_steps=pruner_spec.min_steps, interval_steps=pruner_spec.interval_steps)
    if kind == "sha":
        # Asynchronous successive halving: a trial is judged at each rung against the trials that
        # reached that rung before it, so workers never wait for each other.
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, pruner_spec.min_steps) if pruner_spec.min_steps else "auto",
            reduction_factor=pruner_spec.reduction_factor)
    if kind == "hyperband":
        max_resource = pruner_spec.max_steps or steps or "auto"
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, pruner_spec.min_steps),
            max_resource=max_resource,
            reduction_factor=pruner_spec.reduction_factor)
    raise ValueError(f"pruner kind {kind!r}: expected one of {', '.join(PRUNER_KINDS)}")
