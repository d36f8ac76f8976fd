"""Early stopping: a study spec's ``pruner:`` block -> one of Optuna's pruners.

Owns: the mapping of ``PrunerSpec`` (none | median | percentile | sha | hyperband) onto Optuna's
pruner classes, with steps counted in trainer steps (the ``step`` that ``report(step, metrics)``
passes). All pruners read the other trials' curves from the study's storage, so they work the same
with one worker or many.
Several objectives: Optuna forbids ``trial.report``, so ``prune_on_curves`` decides for the
median / percentile pruners from the stored curves (user attr ``curve``) of finished trials, with
Optuna's rule: prune when the trial's best value so far is worse than the percentile of the
others' values at the same step. ``prune_on_front`` decides for the ``pareto`` pruner (several
objectives only): at each rung, prune a trial that at least ``dominated_by`` of its peers at that
step dominate on every objective the trial reports there.
Must not know about: the model, the scheduler.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import optuna

from autotune.spec_types import PRUNER_KINDS, PrunerSpec

Curve = Sequence[tuple[int, float]]   # (step, value) of one metric, in step order
# (step, {metric: value}) of all the objectives' metrics a trial reported, in step order: the
# ``curve`` user attr as stored
Reports = Sequence[tuple[int, Mapping[str, float]]]


def build_pruner(pruner_spec: PrunerSpec, steps: int | None) -> optuna.pruners.BasePruner:
    """The Optuna pruner for ``pruner_spec``; ``steps`` is the trainer's step count (hyperband's
    default ``max_resource``).

    >>> build_pruner(PrunerSpec(kind="median", min_steps=50), steps=600).__class__.__name__
    'MedianPruner'
    """
    kind = pruner_spec.kind
    if kind in ("none", "pareto"):   # pareto: several objectives only, judged by prune_on_front
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


def _judges_now(pruner_spec: PrunerSpec, curve: Sequence, others: Sequence) -> bool:
    """The gates every rule of several objectives shares: a curve so far, enough peers
    (``startup_trials``), its last step at or past ``min_steps`` and on the ``interval_steps`` grid."""
    if not curve:
        return False
    step = curve[-1][0]
    if len(others) < pruner_spec.startup_trials or step < pruner_spec.min_steps:
        return False
    return (step - pruner_spec.min_steps) % max(1, pruner_spec.interval_steps) == 0


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
    if pruner_spec.kind not in ("median", "percentile") or not _judges_now(pruner_spec, curve, others):
        return False
    step = curve[-1][0]
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


def dominators(point: Sequence[float], peers: Sequence[Sequence[float]], minimize: Sequence[bool]) -> int:
    """How many of ``peers`` dominate ``point``: no worse on every metric and better on one.

    >>> dominators([2.0, 2.0], [[1.0, 1.0], [1.0, 3.0], [2.0, 2.0]], [True, True])
    1
    """
    if not len(peers):
        return 0
    sign = np.where(np.asarray(minimize, dtype=bool), 1.0, -1.0)   # every metric minimized
    p = np.asarray(point, dtype=float) * sign
    q = np.asarray(peers, dtype=float).reshape(len(peers), -1) * sign
    return int(np.sum(np.all(q <= p, axis=1) & np.any(q < p, axis=1)))


def judged_metrics(curve: Reports, directions: Mapping[str, str]) -> list[str]:
    """The objectives ``pareto`` judges a trial on at its current step: those its last report
    carries (an objective reported only at the end, such as a latency measured once, is not)."""
    if not curve:
        return []
    last = curve[-1][1]
    return [m for m in directions if isinstance(last.get(m), (int, float)) and not isinstance(last.get(m), bool)]


def prune_on_front(pruner_spec: PrunerSpec, curve: Reports, others: Sequence[Reports],
                   directions: Mapping[str, str]) -> bool:
    """Rung-wise Pareto rule: whether a trial whose reports ``curve`` end at its current step should
    stop, given its peers' reports ``others`` (finished and running trials) and each objective
    metric's direction (``"minimize"`` / ``"maximize"``).

    The trial's point is its best value so far of each judged metric (``judged_metrics``); a peer's
    is its values at the same step (peers that did not report them all there are left out). The
    trial is pruned when at least ``ceil(dominated_by * peers)`` of them, and at least one,
    dominate it, so a trial on the peers' front at that step is never pruned. ``min_steps``,
    ``interval_steps`` and ``startup_trials`` (peers with a curve) gate it as for ``median``.

    >>> spec = PrunerSpec(kind="pareto", startup_trials=2, dominated_by=0.5)
    >>> d = {"val_loss": "minimize", "latency_ms": "minimize"}
    >>> others = [[(1, {"val_loss": 1.0, "latency_ms": 5.0})], [(1, {"val_loss": 2.0, "latency_ms": 1.0})]]
    >>> prune_on_front(spec, [(1, {"val_loss": 3.0, "latency_ms": 6.0})], others, d)
    True
    >>> prune_on_front(spec, [(1, {"val_loss": 3.0, "latency_ms": 0.5})], others, d)   # the fastest
    False
    """
    if pruner_spec.kind != "pareto" or not _judges_now(pruner_spec, curve, others):
        return False
    step = curve[-1][0]
    judged = judged_metrics(curve, directions)
    if not judged:
        return False
    minimize = [directions[m] == "minimize" for m in judged]
    point = []
    for name, low in zip(judged, minimize):
        values = [float(r[name]) for _, r in curve if _finite(r.get(name))]
        worst = math.inf if low else -math.inf   # nothing but NaN so far: worse than any peer
        point.append((min(values) if low else max(values)) if values else worst)
    peers = []
    for other in others:
        at_step = [r for s, r in other if s == step]
        if at_step and all(_finite(at_step[-1].get(m)) for m in judged):
            peers.append([float(at_step[-1][m]) for m in judged])
    if not peers:
        return False
    needed = max(1, math.ceil(pruner_spec.dominated_by * len(peers) - 1e-9))
    return dominators(point, peers, minimize) >= needed


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
