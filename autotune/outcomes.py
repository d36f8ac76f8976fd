"""What a finished trial means to a user: its outcome, and where its slot time went.

Owns: the mark of an interrupted trial (cut by Ctrl-C / SIGTERM or by ``--hard-stop``: stored as
FAIL, since Optuna has no such state, with the user attr ``stop_reason: interrupted``), the
outcome label every view shows (``complete``, ``out of memory``, ``pruned``, ``failed``,
``interrupted``, ``running``, ``waiting``), the mark of a trial that ran out of memory, and the
shares of the ``time_s`` accounting that trials carry.
Must not know about: how trials are run or stored; everything here is a pure function of trials.

    outcome(trial)                      # 'interrupted' for a trial that a stop cut short
    time_shares(study.trials)           # {'train': 0.91, 'compile': 0.05, ...} or None
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

from optuna.trial import FrozenTrial, TrialState

STOP_ATTR = "stop_reason"           # user attr of an interrupted trial
INTERRUPTED = "interrupted"         # its value, and the outcome label
INTERRUPTED_BY_ATTR = "interrupted_by"   # SIGINT | SIGTERM | timeout | trials | gpu_hours
# Where a copy waits for the next run: system attr naming the trial it reruns.
RERUN_OF_ATTR = "autotune:rerun_of"

# A trial that ran out of GPU memory: stored COMPLETE (so that optimizers see it) with stand-in
# values and this user attr; its outcome label is OUT_OF_MEMORY.
INFEASIBLE_ATTR = "infeasible"
OOM = "oom"                         # its value
OUT_OF_MEMORY = "out of memory"     # the outcome label

TIME_ATTR = "time_s"                # {"setup": s, "compile": s, "train": s, ..., "total": s}
TRAIN_PART = "train"


def is_interrupted(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get(STOP_ATTR) == INTERRUPTED


def is_out_of_memory(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and trial.user_attrs.get(INFEASIBLE_ATTR) == OOM


def is_feasible(trial: FrozenTrial) -> bool:
    """Satisfies every constraint value it stored (<= 0) and did not run out of memory."""
    return not is_out_of_memory(trial) and all(v <= 0 for v in trial.constraints.values())


def outcome(trial: FrozenTrial) -> str:
    """``complete``, ``out of memory``, ``pruned``, ``failed``, ``interrupted``, ``running`` or
    ``waiting``."""
    if is_interrupted(trial):
        return INTERRUPTED
    if is_out_of_memory(trial):
        return OUT_OF_MEMORY
    return "failed" if trial.state == TrialState.FAIL else trial.state.name.lower()


def outcome_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials by outcome, in a stable order (complete, pruned, failed, interrupted, ...)."""
    return in_order(Counter(outcome(t) for t in trials))


def in_order(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts by outcome label in the order every view shows them, zeros left out."""
    order = ("complete", OUT_OF_MEMORY, "pruned", "failed", INTERRUPTED, "running", "waiting")
    return {k: counts[k] for k in order if counts.get(k)}


def failed_on_their_own(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.FAIL and not is_interrupted(t)]


# -- time accounting -----------------------------------------------------------------------------
def time_parts(trial: FrozenTrial) -> dict[str, float] | None:
    """The trial's ``time_s`` as non-negative seconds by part (``total`` kept), or None when it
    has none (older trials) or it is malformed."""
    return parse_time_parts(trial.user_attrs.get(TIME_ATTR))


def parse_time_parts(raw: Any) -> dict[str, float] | None:
    """A stored ``time_s`` value as non-negative seconds by part, or None when malformed."""
    if not isinstance(raw, Mapping):
        return None
    parts = {str(k): float(v) for k, v in raw.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0}
    return parts or None


def time_shares(trials: Iterable[FrozenTrial]) -> dict[str, float] | None:
    """Each part's share of the summed ``total`` of the finished trials that carry ``time_s``,
    largest first (``total`` left out); None when no finished trial carries it.

    A trial without ``total`` counts the sum of its parts as its total."""
    return shares_of(time_parts(t) for t in trials if t.state.is_finished())


def shares_of(trial_parts: Iterable[dict[str, float] | None]) -> dict[str, float] | None:
    """``time_shares`` from the finished trials' parts (``time_parts``; None ones skipped), as
    ``status`` reads them from the store without loading whole trials."""
    summed: dict[str, float] = {}
    total = 0.0
    for parts in trial_parts:
        if parts is None:
            continue
        own = {k: v for k, v in parts.items() if k != "total"}
        total += parts.get("total", sum(own.values()))
        for k, v in own.items():
            summed[k] = summed.get(k, 0.0) + v
    if total <= 0:
        return None
    return dict(sorted(((k, v / total) for k, v in summed.items()), key=lambda kv: -kv[1]))


def time_line(shares: Mapping[str, float] | None) -> str | None:
    """``time in training steps: 91 % (largest overhead: compile 6 %)``; None without shares.

    A user's own objective does not say which of its time trained: its trials' main part is
    ``objective`` (the whole call), and the line says ``time in the objective`` instead."""
    if not shares:
        return None
    main = TRAIN_PART if TRAIN_PART in shares or "objective" not in shares else "objective"
    label = "time in training steps" if main == TRAIN_PART else "time in the objective"
    line = f"{label}: {100 * shares.get(main, 0.0):.0f} %"
    overheads = [(k, v) for k, v in shares.items() if k != main and v > 0]
    if overheads:
        name, share = max(overheads, key=lambda kv: kv[1])
        line += f" (largest overhead: {name} {100 * share:.0f} %)"
    return line


def describe(counts: Mapping[str, Any]) -> str:
    """``3 complete, 1 pruned, 2 interrupted`` (or ``no trials``)."""
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no trials"
