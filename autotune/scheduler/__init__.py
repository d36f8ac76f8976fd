"""The scheduler: runs a study's trials in crash-isolated worker processes until the budget is spent.

Public: ``run_study``, ``RunResult`` and ``SchedulerError`` (``loop.py``, the loop), and
``start_workers`` (a run's workers started before its study is opened, for ``run_study(started=)``); ``gpus`` (GPU
inventory and slots); ``policies`` (its decisions, as small pure functions); ``workers`` (starting,
killing and describing the worker processes). ``_worker`` is what runs inside a worker process,
``_liveness`` the heartbeats, stale trials and retries across processes.
Must not know about: the model. It runs the ``objective(trial_id, params, notify)`` it is handed.

The loop (and with it Optuna and SQLAlchemy) is imported on first use (PEP 562), so that the
spawned worker process, which imports ``autotune.scheduler._worker``, and the study-file checks,
which ask ``gpus`` whether this machine has a GPU, start light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune.scheduler.loop import RunResult, SchedulerError, StartedWorkers, run_study, start_workers

__all__ = ["RunResult", "SchedulerError", "StartedWorkers", "run_study", "start_workers"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from autotune.scheduler import loop
        return getattr(loop, name)
    raise AttributeError(f"module 'autotune.scheduler' has no attribute {name!r}")
