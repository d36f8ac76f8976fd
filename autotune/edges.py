"""Where the best trials press against the search space's bounds: a range worth widening.

Owns: ``edge_notes(trials, directions)``. When most of a study's best trials (the best tenth of
its feasible complete trials, 3 to 10 of them, once 10 are complete; the Pareto front for several
objectives) sit at one end of a numeric parameter's range (within 2 % of it, on the log scale for
log ranges), the optimum probably lies beyond that end, and the search keeps spending trials on
the bound: each such parameter gets a line that says so. ``autotune status STUDY`` and the run's
summary and the report's summary print them.
Must not know about: the model, the scheduler, the spec (it reads the trials' distributions).

    edge_notes(study.trials, study.directions)
    # ['lr: 10 of the 10 best trials are at the low end of its range (0.001): better values may lie below it; widen the range']
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import pareto_front
from autotune.outcomes import is_feasible

MIN_COMPLETE = 10     # fewer feasible complete trials: too early to say
NEAR = 0.02           # of the range (log range for log parameters): "at the end"
SHARE = 2 / 3         # of the best trials carrying the parameter
MIN_AT_END = 3


def best_trials(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> list[FrozenTrial]:
    """The best tenth (3 to 10) of the feasible complete trials with finite values, best first;
    for several objectives their Pareto front. Empty below ``MIN_COMPLETE`` such trials."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)
          and t.values is not None and all(math.isfinite(v) for v in t.values)]
    if len(ok) < MIN_COMPLETE:
        return []
    if len(directions) > 1:
        return pareto_front(ok, directions)
    sign = 1.0 if directions[0] == StudyDirection.MINIMIZE else -1.0
    k = min(10, max(3, math.ceil(len(ok) / 10)))
    return sorted(ok, key=lambda t: sign * t.values[0])[:k]


def _position(dist: FloatDistribution | IntDistribution, value: float) -> float:
    """``value`` in [0, 1] of the range (of its logarithm for a log range)."""
    if dist.log:
        return (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
    return (value - dist.low) / (dist.high - dist.low)


def edge_notes(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> list[str]:
    """One line per numeric parameter whose best trials mostly sit at one end of its range."""
    best = best_trials(trials, directions)
    carried: Counter[str] = Counter()                 # best trials with the parameter
    at_end: Counter[tuple[str, str]] = Counter()      # ... of them at (parameter, "low" | "high")
    dists: dict[str, FloatDistribution | IntDistribution] = {}
    for t in best:
        for name, dist in t.distributions.items():
            if not isinstance(dist, (FloatDistribution, IntDistribution)) or dist.high <= dist.low:
                continue
            carried[name] += 1
            dists[name] = dist
            u = _position(dist, t.params[name])
            if u <= NEAR or u >= 1 - NEAR:
                at_end[name, "low" if u <= NEAR else "high"] += 1
    notes = []
    for (name, end), n in at_end.items():
        m = carried[name]
        if n < MIN_AT_END or n < SHARE * m:
            continue
        bound = dists[name].low if end == "low" else dists[name].high
        shown = f"{bound:.4g}" if isinstance(bound, float) else str(bound)
        beyond = "below" if end == "low" else "above"
        notes.append(f"{name}: {n} of the {m} best trials are at the {end} end of its range "
                     f"({shown}): better values may lie {beyond} it; widen the range")
    return notes

__all__ = ["best_trials", "edge_notes"]
