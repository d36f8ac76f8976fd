"""The worker processes (``autotune.scheduler.workers``): started with the slot's environment,
killed with SIGKILL, their exits put in words."""
from __future__ import annotations

import os
import signal

from autotune.scheduler.gpus import Slot
from autotune.scheduler.workers import describe_exit, kill_worker, start_worker


class VisibleDevices:
    """Returns the worker's CUDA_VISIBLE_DEVICES as its one objective value."""

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        return [float(os.environ["CUDA_VISIBLE_DEVICES"])]


def test_a_worker_runs_with_its_slot_environment_and_leaves_the_parents_alone():
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    worker = start_worker(Slot(index=0, gpu="3"), VisibleDevices())
    try:
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == before
        assert worker.conn.poll(60) and worker.conn.recv()[0] == "ready"
        worker.conn.send(("run", 7, {}, None))
        assert worker.conn.poll(60)
        message = worker.conn.recv()
        assert message[:4] == ("done", 7, "complete", [3.0])
        assert os.getpgid(worker.process.pid) == worker.process.pid   # its own process group
    finally:
        kill_worker(worker)


def test_a_killed_worker_runs_its_exit_handlers_on_sigterm_and_is_reaped():
    worker = start_worker(Slot(index=1, gpu=None), VisibleDevices())
    assert worker.conn.poll(60) and worker.conn.recv()[0] == "ready"
    kill_worker(worker)
    assert worker.stopping and not worker.process.is_alive()
    assert worker.process.exitcode == 128 + signal.SIGTERM      # its own clean exit, before any SIGKILL
    assert describe_exit(-signal.SIGKILL) == "worker process killed by SIGKILL (out of memory killer?)"


def test_describe_exit_names_the_code_the_signal_or_a_vanished_process():
    assert describe_exit(None) == "worker process vanished"
    assert describe_exit(3) == "worker process exited with code 3"
    assert describe_exit(-signal.SIGTERM) == "worker process killed by SIGTERM"
    assert describe_exit(-200) == "worker process killed by signal 200"


class Pid:
    """Returns its worker's pid as its one objective value."""

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        return [float(os.getpid())]


def test_workers_started_before_the_study_are_the_ones_that_run_its_trials(tmp_path):
    # `autotune run` starts its workers first (their start overlaps the opening of the study);
    # the scheduler takes them over instead of starting others
    import optuna

    from autotune.scheduler import run_study, start_workers
    from autotune.spec_types import BudgetSpec, ParallelSpec

    parallel = ParallelSpec(workers=2)
    started = start_workers(parallel, Pid())
    pids = {w.process.pid for w in started.workers}
    assert len(pids) == 2
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)      # created after the workers
    result = run_study(study, storage_url=url, suggest=lambda t: {"x": t.suggest_float("x", 0, 1)},
                       objective=started.objective, parallel=parallel, budget=BudgetSpec(trials=4),
                       started=started)
    assert result.completed == 4
    assert {int(t.value) for t in study.trials} <= pids          # no other worker ran a trial
    assert started.workers == [] and not any(os.path.exists(f"/proc/{p}") and _running(p) for p in pids)
    started.stop()                                                # nothing left: a no-op


def test_workers_started_for_a_run_that_never_comes_are_stopped():
    from autotune.scheduler import start_workers
    from autotune.spec_types import ParallelSpec

    started = start_workers(ParallelSpec(workers=2), Pid())
    processes = [w.process for w in started.workers]
    started.stop()
    assert started.workers == [] and all(not p.is_alive() for p in processes)


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except OSError:
        return False
