"""A cut trial's worker exits cleanly: what it holds outside the process (named semaphores in
/dev/shm) is freed, and Python warns of no leaked semaphore (issue 15 item 5)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers, objectives
from scheduler_tests.stop_objectives import SHM, HoldsSemaphore, IgnoresSigterm, semaphore_file

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="named semaphores live in /dev/shm (Linux)")


def _study(url: str, name: str) -> optuna.Study:
    return store.create_or_load_study(store.open_storage(url), name, ["minimize"],
                                      pruner=optuna.pruners.NopPruner())


def _names(names_dir: Path) -> list[str]:
    return [path.read_text() for path in names_dir.iterdir()]


def _held_inodes() -> set[int]:
    """Inodes of the semaphore files that some process has mapped (sem_open maps its file)."""
    inodes = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            lines = maps.read_text().splitlines()
        except OSError:
            continue
        inodes.update(int(line.split()[4]) for line in lines if "/dev/shm/sem." in line)
    return inodes


def _unheld_new_semaphores(before: set[str]) -> list[str]:
    """Semaphore files that appeared since ``before`` and that no process holds: leaked ones (the
    machine's other processes' live semaphores are held)."""
    new = {}
    for path in SHM.glob("sem.*"):
        try:
            if path.name not in before:
                new[path.name] = path.stat().st_ino
        except FileNotFoundError:
            continue
    held = _held_inodes()     # after the stat: a live semaphore is mapped before its name exists
    return sorted(name for name, inode in new.items() if inode not in held and (SHM / name).exists())


def test_a_hard_stop_unlinks_the_semaphores_that_cut_trials_held(sqlite_url, tmp_path):
    names_dir = tmp_path / "names"
    names_dir.mkdir()
    study = _study(sqlite_url, "clean")
    result = scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_x,
        objective=HoldsSemaphore(str(names_dir)),
        parallel=ParallelSpec(gpus=0, workers=1), budget=BudgetSpec(gpu_hours=3 / 3600),
        hard_stop=True)

    assert (result.stopped_by, result.interrupted_trials, result.failed) == ("gpu_hours", 1, 0)
    names = _names(names_dir)
    assert len(names) == 1
    # The scheduler's resource tracker (this process's) still runs: a killed worker's semaphore
    # would still be there, waiting for the tracker's clean-up and warning at exit.
    assert [name for name in names if semaphore_file(name).exists()] == []


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period(sqlite_url, tmp_path, caplog):
    caplog.set_level("INFO", logger="autotune")
    pid_file = tmp_path / "worker.pid"
    study = _study(sqlite_url, "stuck")
    result = scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_x,
        objective=IgnoresSigterm(str(pid_file)),
        parallel=ParallelSpec(gpus=0, workers=1), budget=BudgetSpec(gpu_hours=2 / 3600),
        hard_stop=True)

    assert (result.stopped_by, result.interrupted_trials, result.failed) == ("gpu_hours", 1, 0)
    assert not helpers.alive(int(pid_file.read_text()))
    (cut,) = [t for t in helpers.trials(sqlite_url, "stuck") if t.state == TrialState.FAIL]
    assert cut.user_attrs["interrupted_by"] == "gpu_hours"
    assert "worker of slot 0 did not exit within 5 s of SIGTERM: killed" in caplog.text   # says why a warning may follow


def _semaphore_study(tmp_path: Path, names_dir: Path) -> Path:
    doc = {
        "study": "sem",
        "storage": f"sqlite:///{tmp_path / 'store.db'}",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "optimizer": {"kind": "random", "seed": 0},
        "budget": {"trials": 4},
        "parallel": {"workers": 2},
        "objective": "tests.scheduler_tests.stop_objectives:holds_semaphore",
        "trainer": {"steps": 4, "names": str(names_dir)},
    }
    path = tmp_path / "sem.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_autotune_run_hard_stop_leaves_no_leaked_semaphore_and_no_warning(tmp_path):
    names_dir = tmp_path / "names"
    names_dir.mkdir()
    path = _semaphore_study(tmp_path, names_dir)
    before = {p.name for p in SHM.glob("sem.*")}
    for timeout in (5, 10, 20, 40):   # a loaded machine may start no trial within 5 s: then longer
        proc = subprocess.run([sys.executable, "-m", "autotune", "run", str(path), "--timeout",
                               f"{timeout}s", "--hard-stop", "--no-live"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if _names(names_dir):
            break
    assert "re-queued" in proc.stderr + proc.stdout      # trials holding a semaphore were cut
    assert "leaked semaphore" not in proc.stderr, proc.stderr
    assert "resource_tracker" not in proc.stderr, proc.stderr
    assert [name for name in _names(names_dir) if semaphore_file(name).exists()] == []
    assert _unheld_new_semaphores(before) == []
