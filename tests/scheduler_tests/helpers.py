"""Running ``run_study`` in a child process (to kill it, or to be a second machine) and reading
the outcome back from the store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autotune import store

TESTS_DIR = Path(__file__).resolve().parents[1]


def spawn_run(storage_url: str, study_name: str, **settings) -> subprocess.Popen:
    """``python -m scheduler_tests.run_child`` with ``settings`` as JSON, in its own session
    (so that a test can signal its whole process group, as a terminal's Ctrl-C does)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "scheduler_tests.run_child", storage_url, study_name,
            json.dumps(settings)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def trials(storage_url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=study_name, storage=store.open_storage(storage_url))
    return study.get_trials(deepcopy=False)


def count(storage_url: str, study_name: str, *states: TrialState) -> int:
    return sum(t.state in states for t in trials(storage_url, study_name))


def wait_until(predicate, timeout: float = 60.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, which PID 1 of a container may never reap, is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_reader(storage_url: str, stop_file: Path) -> subprocess.Popen:
    """``python -m scheduler_tests.reader``, returned once it has read the store a first time, so
    that its reads overlap all that the test starts next; ``stop_reader`` ends it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    reader = subprocess.Popen([sys.executable, "-m", "scheduler_tests.reader", storage_url, str(stop_file)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = reader.stdout.readline()
    assert first.strip() == "reading", first + reader.communicate(timeout=60)[0]
    return reader


def stop_reader(reader: subprocess.Popen, stop_file: Path) -> str:
    """What the reader printed: ``reads=N`` and an ``ERROR`` line for each failed read."""
    stop_file.touch()
    return reader.communicate(timeout=60)[0]
