"""Cheap objectives for trials of a searched width (``procs_per_trial``), whose trials wait on
the store's state, never on the clock. Spawned workers import this module by name, under
``scheduler_tests.`` (run_study) or ``tests.scheduler_tests.`` (a study file's ``objective:``).

Each trial's ``x`` is its label (the test enqueues it); a trial appends ``x`` to ``log`` when it
starts, so the file holds the order in which trials started, not the order they were claimed.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

WIDTH = "procs_per_trial"


def suggest_width(trial: optuna.trial.Trial) -> dict:
    return {"x": trial.suggest_int("x", 0, 99), WIDTH: trial.suggest_categorical(WIDTH, [1, 2])}


def started_order(log: str | Path) -> list[int]:
    path = Path(log)
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _log_start(log: str, x: int) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)


def _state_of(storage_url: str, study_name: str, x: int) -> TrialState | None:
    """The state of the newest trial labelled ``x`` (a re-queued copy shares its label)."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    states = [t.state for t in study.get_trials(deepcopy=False) if t.params.get("x") == x]
    return states[-1] if states else None


@dataclass
class WaitsForTheWideTrial:
    """The scheduler's objective ``(trial_id, params, notify)``. Trial ``x == first`` (width 1)
    runs until the trial ``x == wide`` has been claimed (RUNNING), and with ``until_released`` on
    until it is RUNNING no more (the run released it); after ``give_up_s`` of its own run time
    without the claim (the run's timeout came first: no claim can follow), or as long again
    without the release (the loop failed to release it), it returns. Every other trial returns at
    once."""

    storage_url: str
    study_name: str
    log: str
    first: int = 0
    wide: int = 1
    until_released: bool = False
    give_up_s: float = 600.0

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        x = int(params["x"])
        _log_start(self.log, x)
        if x == self.first:
            started = time.monotonic()
            while _state_of(self.storage_url, self.study_name, self.wide) != TrialState.RUNNING:
                if time.monotonic() - started > self.give_up_s:
                    return [float(x)]
                time.sleep(0.05)
            started = time.monotonic()
            while self.until_released and _state_of(self.storage_url, self.study_name,
                                                    self.wide) == TrialState.RUNNING:
                if time.monotonic() - started > self.give_up_s:
                    return [float(x)]
                time.sleep(0.05)
        return [float(x)]


def runs_while_held(params: dict, report) -> dict:
    """A user objective (``fn(params, report)``; it never sees the width): trial ``x == 0`` writes
    the file ``started`` names and runs until the scheduler cuts it; any other returns at once."""
    if int(params["x"]) == 0:
        Path(params["started"]).write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)
    return {"val_loss": float(params["x"])}
