"""Objectives whose trials run until the scheduler cuts them, holding what outlives a process.

The semaphore is a named one in /dev/shm (a 'spawn' context's lock, registered with the resource
tracker that the worker shares with the scheduler); its name goes to a file in ``names_dir`` for
the test to look for afterwards. Spawned workers import this module by name, under
``scheduler_tests.`` (the scheduler tests) or ``tests.scheduler_tests.`` (a study file's
``objective:``), so it imports nothing of the tests.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SHM = Path("/dev/shm")


def semaphore_file(name: str) -> Path:
    """Where glibc keeps the named semaphore ``name`` (``/mp-abc`` -> /dev/shm/sem.mp-abc)."""
    return SHM / f"sem.{name.lstrip('/')}"


def _hold_a_semaphore(names_dir: str) -> object:
    lock = multiprocessing.get_context("spawn").Lock()
    Path(names_dir, uuid.uuid4().hex).write_text(lock._semlock.name)
    return lock


def _run_until_cut() -> None:
    while True:
        time.sleep(0.05)


def holds_semaphore(params: dict, report) -> dict:
    """A user objective (``fn(params, report)``): holds a semaphore until the trial is cut."""
    lock = _hold_a_semaphore(params["names"])
    report(0, {"val_loss": 1.0})
    _run_until_cut()
    del lock
    return {"val_loss": 0.0}


@dataclass
class HoldsSemaphore:
    """The scheduler's objective ``(trial_id, params, notify)``: holds a semaphore until cut."""

    names_dir: str

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        lock = _hold_a_semaphore(self.names_dir)
        notify(1, {"loss": 1.0})
        _run_until_cut()
        del lock
        return [0.0]


@dataclass
class IgnoresSigterm:
    """Ignores SIGTERM (as a stuck worker would not act on it), writes its pid to ``pid_file``,
    and runs until killed."""

    pid_file: str

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(self.pid_file).write_text(str(os.getpid()))
        _run_until_cut()
        return [0.0]
