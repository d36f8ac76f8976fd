"""How long one trial may run: the scheduler's per-trial time limit, as small pure decisions.

Owns: the limit of a trial (``budget.trial_timeout``, else one learnt from the study's own complete
trials), whether a running trial has passed it, and the ``fail_reason`` of one that has.
Must not know about: processes, the store. The scheduler reads the times and applies these.

    limit = trial_limit_s(None, [40.0, 55.0, 61.0])   # 600.0: the floor (5 x 55 s is less)
    timed_out(started=0.0, now=612.0, limit_s=limit)  # True
"""
from __future__ import annotations

import statistics
from typing import Sequence

MEDIAN_FACTOR = 5.0     # a trial may take this many times the median complete trial ...
MIN_COMPLETE = 3        # ... once this many trials are complete (fewer say too little) ...
FLOOR_S = 600.0         # ... and never less than 10 minutes. A GPU study's first trials compile
                        # (2-20 s a trial, more for a large model under a loaded machine) and its
                        # trials vary with the model size they draw; 10 minutes keeps a slow but
                        # sound trial alive and still frees a hung slot within the hour.


def trial_limit_s(spec_limit_s: float | None, complete_slot_seconds: Sequence[float]) -> float | None:
    """The wall time a trial may run, in seconds, or None for no limit (yet).

    ``spec_limit_s`` (``budget.trial_timeout``) wins when set. Otherwise, once ``MIN_COMPLETE``
    trials are complete: ``MEDIAN_FACTOR`` x the median of their slot times, at least ``FLOOR_S``.
    Pruned and failed trials are left out: they stop early, and would make the limit too tight.
    """
    if spec_limit_s is not None:
        return float(spec_limit_s)
    if len(complete_slot_seconds) < MIN_COMPLETE:
        return None
    return max(FLOOR_S, MEDIAN_FACTOR * statistics.median(complete_slot_seconds))


def timed_out(started: float, now: float, limit_s: float | None) -> bool:
    """Whether a trial started at ``started`` (monotonic seconds) has run past ``limit_s``."""
    return limit_s is not None and now - started > limit_s


def timeout_reason(ran_s: float, limit_s: float, from_spec: bool) -> str:
    """The ``fail_reason`` of a trial stopped by its limit; it starts with ``timeout``."""
    source = ("budget.trial_timeout" if from_spec else
              f"default: {MEDIAN_FACTOR:g} x the median complete trial, at least {FLOOR_S:g} s; "
              "set budget.trial_timeout to change it")
    return f"timeout: ran {ran_s:.0f} s, limit {limit_s:.0f} s ({source})"
