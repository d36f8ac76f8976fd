"""Fault injection: a study meets its budget, or stops cleanly, and loses no finished trial when a
worker is stopped (SIGSTOP) or the SQLite store's disk fills up.

Covered elsewhere: a hung trial (test_trial_timeout.py), SIGKILL of a worker (test_failures.py),
connections cut mid-study on PostgreSQL (store_tests/test_store_hardening.py, with
``pg_terminate_backend`` of every connection of a database of the test's own). A PostgreSQL
*restart* is not injected: the server at 127.0.0.1:5432 is shared with other tests running at the
same time, which a restart would break; cutting every connection is what clients see of one.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers, objectives

REPO = Path(__file__).resolve().parents[2]


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


# --- SIGSTOP of a worker -------------------------------------------------------------------------
def test_a_stopped_worker_is_failed_by_the_trial_timeout_and_the_study_meets_its_budget(
        storage_url, study_name, tmp_path):
    """Heartbeats come from the scheduler, not the worker: a stopped worker's trial still looks
    alive, and only ``budget.trial_timeout`` ends it (SIGKILL reaches a stopped process)."""
    pid_file = tmp_path / "worker.pid"
    stopped = threading.Event()

    def stop_the_worker() -> None:
        helpers.wait_until(lambda: pid_file.exists() and pid_file.read_text(), 120)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGSTOP)
        helpers.wait_until(lambda: _state(pid) in ("T", "t", None), 30)
        if _state(pid) is not None:
            stopped.set()

    study = store.create_or_load_study(
        store.open_storage(storage_url), study_name, ["minimize"],
        sampler=optuna.samplers.PartialFixedSampler({"x": 0}, optuna.samplers.RandomSampler()),
        pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"x": 5})                     # the first trial's worker gets stopped
    stopper = threading.Thread(target=stop_the_worker, daemon=True)
    stopper.start()
    result = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_kind,
        objective=objectives.WaitsToBeStopped(str(pid_file)),
        parallel=ParallelSpec(gpus=0, workers=2, heartbeat_interval=1, grace_period=3),
        budget=BudgetSpec(trials=4, timeout_s=300, trial_timeout_s=3))
    stopper.join(30)

    assert stopped.is_set(), "the worker was never seen stopped"
    trials = helpers.trials(storage_url, study_name)
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.params == {"x": 5}
    assert failed.user_attrs["fail_reason"].startswith("timeout: ran ")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert (result.stopped_by, result.completed, result.failed) == ("trials", 4, 1)
    assert len(complete) == 4                          # every finished trial is in the store
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    helpers.wait_until(lambda: _state(int(pid_file.read_text())) in (None, "Z"), 30)


# --- a full disk under the SQLite store ----------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only: CI runs as root); skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_the_run_cleanly_and_keeps_every_finished_trial(tiny_disk, tmp_path):
    url = f"sqlite:///{tiny_disk / 'store.db'}"
    name = f"full-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({
        "study": name, "storage": url,
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "optimizer": {"kind": "random", "seed": 0}, "pruner": {"kind": "none"},
        "budget": {"trials": 100_000},                 # the disk fills long before
        "parallel": {"workers": 2, "heartbeat_interval": 1, "grace_period": 3},
        "objective": "tests.user_objectives:quadratic", "trainer": {"steps": 4},
    }, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "autotune", "run", str(spec), "--no-live"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)

    output = done.stdout + done.stderr
    assert done.returncode in (1, 2), output
    assert f"error: storage {url}: database or disk is full" in output
    assert "Traceback" not in output
    assert "retrying" not in output and "invalid data" not in output   # a full disk stops at once, named as such
    finished = re.search(r"finished (\d+) trials", output)
    assert finished, output
    reader = store.open_reader(url)                    # reads only: the disk is still full
    trials = reader.get_all_trials(reader.get_study_id_from_name(name), deepcopy=False)
    stored = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(stored) == int(finished.group(1)) > 0   # 0 finished trials lost
    assert all(t.values for t in stored if t.state == TrialState.COMPLETE)


def test_a_failed_heartbeat_is_logged_as_the_drivers_one_line_with_passwords_hidden(caplog):
    """On a full disk the heartbeat thread goes on beating through the run's shutdown; each miss is
    one warning naming the database's own error, not Optuna's wrapper ("invalid data in the
    commit"), which blames the wrong thing."""
    import sqlite3

    from autotune.scheduler import _liveness

    class FullDisk:
        def record_heartbeat(self, trial_id):
            try:
                raise sqlite3.OperationalError(
                    "database or disk is full (postgresql://u:hunter2@db/x)\nsecond line")
            except sqlite3.OperationalError as exc:
                raise optuna.exceptions.StorageInternalError(
                    "An exception is raised during the commit. This typically happens due to "
                    "invalid data in the commit, e.g. exceeding max length.") from exc

    beats = _liveness.Heartbeats(FullDisk(), interval=0.01)
    beats.add(7)
    with caplog.at_level("WARNING", logger="autotune"):
        beats.start()
        try:
            helpers.wait_until(lambda: any("heartbeat" in r.getMessage() for r in caplog.records), 30,
                               every=0.01)
        finally:
            beats.done.set()
            beats.join(10)
    message = next(r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage())
    assert message == "heartbeat of trial id 7 failed: database or disk is full (postgresql://u:***@db/x)"
