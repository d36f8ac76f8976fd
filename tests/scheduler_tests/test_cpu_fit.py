"""On a machine without GPU, a study's CPU workers fit the cores, and split the torch threads."""
from __future__ import annotations

import os

import pytest

from autotune.scheduler import gpus
from autotune.scheduler.gpus import describe_slots, plan_slots
from autotune.spec_types import ParallelSpec


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_eight_workers_asked_on_two_cores_run_two_with_one_thread_each(two_cores):
    parallel = ParallelSpec(gpus="auto", workers=8, evals=8, fit_cores=True)
    slots = plan_slots(parallel, available=[])
    assert [(s.gpu, s.threads) for s in slots] == [(None, 1), (None, 1)]
    assert slots[0].env == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    assert describe_slots(parallel, slots) == \
        "parallel: 8 workers asked, 2 CPU cores: running 2 at a time, 1 torch thread each"


def test_one_worker_on_two_cores_gets_both_threads(two_cores):
    slots = plan_slots(ParallelSpec(workers=1, fit_cores=True), available=[])
    assert [s.threads for s in slots] == [2]
    assert describe_slots(ParallelSpec(workers=1), slots) == \
        "parallel: 1 CPU worker(s) on 2 cores, 2 torch threads each, no GPU"


def test_without_fit_cores_every_worker_asked_runs_with_one_thread(two_cores):
    slots = plan_slots(ParallelSpec(gpus=0, workers=8), available=[])
    assert len(slots) == 8 and {s.threads for s in slots} == {1}


def test_omp_num_threads_set_by_the_user_is_kept(two_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    slots = plan_slots(ParallelSpec(workers=2, fit_cores=True), available=[])
    assert [s.env["OMP_NUM_THREADS"] for s in slots] == ["3", "3"]


def test_parallel_evals_on_gpus_become_trials_per_gpu(two_cores):
    slots = plan_slots(ParallelSpec(workers=8, evals=8, fit_cores=True), available=["0", "1", "2"])
    assert [s.gpu for s in slots] == ["0"] * 3 + ["1"] * 3 + ["2"] * 3   # ceil(8 / 3) per GPU
    assert all(s.share == pytest.approx(1 / 3) and s.threads == 1 for s in slots)   # 2 cores, 9 slots
    assert describe_slots(ParallelSpec(evals=8), slots) == \
        "parallel: 8 concurrent trials asked, 3 GPU(s): 3 trial(s) per GPU, 9 at a time, 1 CPU thread each"


def test_gpu_detection_without_torch_finds_none_where_cuda_is_hidden(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.detect_gpus(ask_torch=False) == []


OBJECTIVE = '''
import os, time

def threads(params, report):
    time.sleep(0.5)
    return {"val_loss": float(os.environ.get("OMP_NUM_THREADS", -1))}
'''


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores and CPU affinity")
def test_a_study_asking_eight_workers_on_two_cores_runs_two_each_with_one_thread(tmp_path):
    import subprocess
    import sys

    import optuna
    import yaml
    (tmp_path / "threads_obj.py").write_text(OBJECTIVE)
    study = tmp_path / "threads.yaml"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study.write_text(yaml.safe_dump({
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "budget": {"trials": 4}, "parallel": {"workers": 8}, "objective": "threads_obj:threads"}))
    two = sorted(os.sched_getaffinity(0))[:2]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    run = subprocess.run([sys.executable, "-m", "autotune", "run", str(study), "--storage", url,
                          "--no-live"], capture_output=True, text=True, env=env, timeout=180,
                         preexec_fn=lambda: os.sched_setaffinity(0, two))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "parallel: 8 workers asked, 2 CPU cores: running 2 at a time, 1 torch thread each" \
        in run.stdout.splitlines()
    trials = optuna.load_study(study_name="threads", storage=url).get_trials()
    assert [t.values for t in trials] == [[1.0]] * 4
    assert {t.user_attrs["slot"] for t in trials} <= {0, 1}
