"""A study's ``constraints:`` as constraint values, and trials that ran out of memory.

Owns: the constraint values a trial stores when it finishes (``set_constraints``, through Optuna's
public ``Trial.set_constraint``; its successor of the deprecated ``constraints_func``): one per
constraint, <= 0 when satisfied, scaled by the bound (``(latency_ms - 5) / 5``) so that
violations of metrics in different units add up sensibly, plus ``out_of_memory``: 1 for a trial
that ran out of memory, 0 otherwise, so the optimizer learns where memory runs out even when the
memory it reached is unknown or under the bound. A metric a trial did not report counts as
satisfied. Every trial of a constrained study carries the same keys (Optuna's GP requires it).
Also owns recognising an out-of-memory error (``is_out_of_memory``) and the memory it reached.
Must not know about: samplers' internals, the scheduler, the model.
"""
from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import Trial

from autotune.outcomes import INFEASIBLE_ATTR, OOM
from autotune.spec_types import ConstraintSpec

_OOM_TEXT = ("CUDA out of memory", "OutOfMemoryError", "out of memory")
_TRIED_RE = re.compile(r"Tried to allocate ([\d.]+) ?([KMGT]i?B)")
_UNIT_MB = {"KiB": 1 / 1024, "KB": 1 / 1024, "MiB": 1, "MB": 1, "GiB": 1024, "GB": 1024,
            "TiB": 1024**2, "TB": 1024**2}


OUT_OF_MEMORY_KEY = "out_of_memory"   # the constraint every constrained trial also carries


def constraint_values(constraints: Sequence[ConstraintSpec], metrics: Mapping[str, Any],
                      out_of_memory: bool = False) -> dict[str, float]:
    """``{"latency_ms <= 5": (latency_ms - 5) / 5, ..., "out_of_memory": 0 or 1}`` (<= 0: satisfied).

    Example:
        >>> from autotune.spec_types import ConstraintSpec
        >>> constraint_values([ConstraintSpec("latency_ms", "<=", 5.0)], {"latency_ms": 6})
        {'latency_ms <= 5': 0.2, 'out_of_memory': 0.0}
    """
    values = {str(c): _violation(c, metrics.get(c.metric)) for c in constraints}
    values[OUT_OF_MEMORY_KEY] = 1.0 if out_of_memory else 0.0
    return values


def set_constraints(trial: Trial, constraints: Sequence[ConstraintSpec],
                    metrics: Mapping[str, Any], out_of_memory: bool = False) -> None:
    """Store the constraint values on a running trial (Optuna's public ``set_constraint``), where
    every optimizer reads them; nothing when the study has no constraints."""
    if constraints:
        for key, value in constraint_values(constraints, metrics, out_of_memory).items():
            trial.set_constraint(key, value)


def _violation(constraint: ConstraintSpec, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0   # not reported (a pruned trial's latency): nothing to hold against it
    scale = abs(constraint.bound) or 1.0
    excess = value - constraint.bound if constraint.op == "<=" else constraint.bound - value
    return float(excess / scale)


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (``torch.OutOfMemoryError``, or its text in another error)."""
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _OOM_TEXT)


def memory_reached_mb(exc: BaseException) -> float | None:
    """The GPU memory (MB) a trial that ran out of memory reached: the peak allocated by this
    process plus the allocation that failed (from the error text); None when neither is known."""
    reached = 0.0
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        try:
            reached = torch.cuda.max_memory_allocated() / 2**20
        except RuntimeError:
            reached = 0.0
    match = _TRIED_RE.search(str(exc))
    if match:
        reached += float(match.group(1)) * _UNIT_MB[match.group(2)]
    return round(reached, 1) if reached > 0 else None


__all__ = ["OUT_OF_MEMORY_KEY", "constraint_values", "is_out_of_memory", "memory_reached_mb",
           "set_constraints"]
