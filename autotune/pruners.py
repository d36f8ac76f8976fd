"""Early stopping: a study spec's ``pruner:`` block -> one of Optuna's pruners.

Owns: the mapping of ``PrunerSpec`` (none | median | percentile | sha | hyperband) onto Optuna's
pruner classes, with steps counted in trainer steps (the ``step`` that ``report(step, metrics)``
passes). All pruners read the other trials' curves from the study's storage, so they work the same
with one worker or many.
Several objectives: Optuna forbids ``trial.report``, so ``prune_on_curves`` decides for the
median / percentile pruners from the stored curves (user attr ``curve``) of finished trials, with
Optuna's rule: prune when the trial's best value so far is worse than the percentile of the
others' values at the same step.
Must not know about: the model, the scheduler.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna

from autotune.spec_types import PRUNER_KINDS, PrunerSpec

Curve = Sequence[tuple[int, float]]   # (step, value) of one metric, in step order


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


def prune_on_curves(pruner_spec: PrunerSpec, curve: Curve, others: Sequence[Curve],
                    minimize: bool) -> bool:
    """Whether a trial whose ``curve`` (its metric so far) ends at its current step should stop,
    judged against finished trials' ``others`` as Optuna's median / percentile pruners judge.

    >>> spec = PrunerSpec(kind="median", startup_trials=2, metric="val_loss")
    >>> others = [[(1, 1.0), (2, 0.5)], [(1, 1.2), (2, 0.7)], [(1, 0.9), (2, 0.4)]]
    >>> prune_on_curves(spec, [(1, 1.5), (2, 1.1)], others, minimize=True)
    True
    >>> prune_on_curves(spec, [(1, 1.0), (2, 0.45)], others, minimize=True)
    False
    """
    if pruner_spec.kind not in ("median", "percentile") or not curve:
        return False
    step = curve[-1][0]
    if len(others) < pruner_spec.startup_trials or step < pruner_spec.min_steps:
        return False
    if (step - pruner_spec.min_steps) % max(1, pruner_spec.interval_steps):
        return False
    at_step = [v for other in others for s, v in other if s == step and math.isfinite(v)]
    if not at_step:
        return False
    values = [v for _, v in curve if math.isfinite(v)]
    if not values:
        return True   # nothing but NaN so far
    best = min(values) if minimize else max(values)
    percentile = 50.0 if pruner_spec.kind == "median" else pruner_spec.percentile
    cutoff = float(np.percentile(at_step, percentile if minimize else 100.0 - percentile))
    return best > cutoff if minimize else best < cutoff
