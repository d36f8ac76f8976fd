"""The scheduler's decisions, as small pure functions: the loop reads the clock and the store, these decide.

Owns: whether the budget is spent (trials, wall time, GPU-hours) and whether a trial may be claimed,
which slots take the next trials, a trial's width (ranks) and the units it is placed on, whether a failed trial is retried, whether a trial's scheduler is
gone (its heartbeat older than its grace period), a trial's time limit (``budget.trial_timeout``,
else one learnt from the study's own complete trials) and whether it has passed it, when failures in
a row stop a run or a slot, and how a trial's time in its slot splits into parts.
Must not know about: processes, the store, Optuna. The scheduler (``loop.py``) applies these.

    limit = trial_limit_s(None, [40.0, 55.0, 61.0])   # 600.0: the floor (5 x 55 s is less)
    timed_out(started=0.0, now=612.0, limit_s=limit)  # True
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from autotune.spec_types import ParallelSpec

MEDIAN_FACTOR = 5.0     # a trial may take this many times the median complete trial ...
MIN_COMPLETE = 3        # ... once this many trials are complete (fewer say too little) ...
FLOOR_S = 600.0         # ... and never less than 10 minutes. A GPU study's first trials compile
                        # (2-20 s a trial, more for a large model under a loaded machine) and its
                        # trials vary with the model size they draw; 10 minutes keeps a slow but
                        # sound trial alive and still frees a hung slot within the hour.
FAILURE_STREAK = 10     # trials in a row failing (at least 3 per slot) stop the run
MAX_START_FAILURES = 3  # workers of a slot dying before "ready" in a row: give up


# --- the budget -------------------------------------------------------------------------------
def budget_spent(elapsed_s: float, timeout_s: float | None, gpu_seconds: float,
                 gpu_hours: float | None) -> str | None:
    """Why no new trial is handed out, or None: ``timeout`` when this run's ``elapsed_s`` reached
    ``budget.timeout``, ``gpu_hours`` when the study's GPU-seconds (finished trials plus the running
    ones so far) reached ``budget.gpu_hours``. The trials budget is judged at each claim
    (``claim_decision``), under the study's lock.

        >>> budget_spent(30.0, 60.0, 7000.0, 2.0), budget_spent(60.0, 60.0, 0.0, None)
        (None, 'timeout')
        >>> budget_spent(30.0, None, 7200.0, 2.0)
        'gpu_hours'
    """
    if timeout_s is not None and elapsed_s >= timeout_s:
        return "timeout"
    if gpu_hours is not None and gpu_seconds >= gpu_hours * 3600.0:
        return "gpu_hours"
    return None


def trials_spent(finished: int, wanted: int | None) -> bool:
    """Whether the study's finished (COMPLETE + PRUNED) trials meet ``budget.trials``."""
    return wanted is not None and finished >= wanted


def claim_decision(finished: int, running: int, wanted: int | None) -> str:
    """At a claim, from the study's counts (every process's): ``trials`` (the budget is met: stop),
    ``wait`` (the rest of the budget runs elsewhere; some of it may fail) or ``claim``.

        >>> [claim_decision(f, r, 10) for f, r in ((10, 0), (7, 3), (7, 2))] + [claim_decision(99, 0, None)]
        ['trials', 'wait', 'claim', 'claim']
    """
    if trials_spent(finished, wanted):
        return "trials"
    if wanted is not None and finished + running >= wanted:
        return "wait"
    return "claim"


# --- slots ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlotState:
    """What the loop knows of a slot's worker when it hands out trials."""

    index: int
    busy: bool     # a trial runs there
    ready: bool    # its worker process said "ready" (started, objective unpickled)
    alive: bool    # its worker process runs


def free_slots(slots: Iterable[SlotState]) -> list[int]:
    """The slots that take the next trials, lowest index first: idle, with a live, ready worker.

        >>> free_slots([SlotState(1, False, True, True), SlotState(0, True, True, True),
        ...             SlotState(2, False, False, True), SlotState(3, False, True, False)])
        [1]
    """
    return [s.index for s in sorted(slots, key=lambda s: s.index)
            if not s.busy and s.ready and s.alive]


def trial_width(params: Mapping[str, Any], parallel: ParallelSpec) -> int:
    """The ranks (GPUs or CPU processes) a trial runs as: its searched ``gpus_per_trial`` /
    ``procs_per_trial``, else the study's fixed one (1 unless set).

        >>> searched = ParallelSpec(searched_width="procs_per_trial", widest=4)
        >>> trial_width({"procs_per_trial": 4, "lr": 0.1}, searched), trial_width({"lr": 0.1}, searched)
        (4, 1)
        >>> trial_width({}, ParallelSpec(gpus_per_trial=2))
        2
    """
    if parallel.searched_width is not None and parallel.searched_width in params:
        return int(params[parallel.searched_width])
    return parallel.ranks_per_trial


def place(width: int, free_units: Iterable[int]) -> tuple[int, ...] | None:
    """The ``width`` free units (GPUs, or CPU cores) a trial runs on, or None until that many are
    free: the lowest run of adjacent units that fits (neighbouring GPUs share the fastest links and
    a run leaves fewer holes), else the lowest ``width`` units. The first is the trial's lead unit:
    its worker launches the ranks.

        >>> place(2, [0, 2, 3]), place(2, [0, 2, 5]), place(3, [1, 4])
        ((2, 3), (0, 2), None)
    """
    free = sorted(set(free_units))
    if width < 1 or len(free) < width:
        return None
    for i in range(len(free) - width + 1):
        if free[i + width - 1] - free[i] == width - 1:
            return tuple(free[i:i + width])
    return tuple(free[:width])


def slot_broken(start_failures: int) -> bool:
    """Whether a slot's workers died before "ready" often enough in a row to give up the run."""
    return start_failures >= MAX_START_FAILURES


# --- failures ---------------------------------------------------------------------------------
def may_retry(retries_so_far: int, max_retries: int) -> bool:
    """Whether a trial whose worker died is re-queued: each trial is retried ``max_retries`` times
    at most (a trial that fails on its own, or runs out of time, is never retried)."""
    return retries_so_far < max_retries


def worker_exits_after(outcome: str, payload: object) -> bool:
    """Whether a worker exits after reporting a trial (a CUDA error can poison its context; the
    scheduler starts a fresh one), so that no trial is handed to it meanwhile."""
    return outcome == "failed" and "CUDA error" in str(payload)


def gpu_fault_retried(reason: str | None, shared_context: bool) -> bool:
    """Whether a trial that failed with a CUDA error (not out of memory) is retried as if its
    worker had died: only where the trials of its GPU share one context through MPS, where a fatal
    fault of any of them fails them all, so that the error need not be the trial's own. Bounded by
    ``may_retry``: a trial that faults by itself faults again and then stays failed."""
    return (shared_context and worker_exits_after("failed", reason)
            and "out of memory" not in str(reason).lower())


def is_stale(heartbeat_age_s: float, grace_s: float | None) -> bool:
    """Whether a RUNNING trial's scheduler is gone: no heartbeat for longer than the grace period
    of the scheduler that runs it (None: that scheduler keeps no heartbeat; never stale)."""
    return grace_s is not None and heartbeat_age_s > grace_s


def failure_streak(streak: int, failed: bool) -> int:
    """Trials in a row that failed, after one more finished (a completed or pruned one ends it)."""
    return streak + 1 if failed else 0


def too_many_failures(streak: int, n_slots: int) -> bool:
    """Whether every recent trial failed (a broken objective or environment): ``FAILURE_STREAK`` in
    a row, at least 3 per slot, stop a run before it turns its whole budget into failed trials."""
    return streak >= failure_limit(n_slots)


def failure_limit(n_slots: int) -> int:
    return max(FAILURE_STREAK, 3 * n_slots)


# --- time -------------------------------------------------------------------------------------
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


def slot_time_split(parts: dict[str, float] | None, slot_seconds: float) -> dict[str, float]:
    """Where a trial's time in its slot went: the worker's parts (seconds; None when the worker
    died or was killed and could not say: all of it ``unaccounted``; a slot's first trial also
    ``worker_start``, the worker's warm-up while the trial waited for it: imports, the GPU's start),
    ``handoff`` (the rest: sampling, the pipe both ways) and ``total`` (the slot time), the parts
    summing to it."""
    if parts is None:
        return {"unaccounted": round(slot_seconds, 3), "total": round(slot_seconds, 3)}
    split = {k: round(float(v), 3) for k, v in parts.items() if k not in ("total", "handoff")}
    if "worker_start" in split:   # the worker's warm-up may have begun before this trial was handed out
        others = sum(v for k, v in split.items() if k != "worker_start")
        split["worker_start"] = round(min(split["worker_start"], max(0.0, slot_seconds - others)), 3)
    split["handoff"] = round(max(0.0, slot_seconds - sum(split.values())), 3)
    split["total"] = round(slot_seconds, 3)
    return split
