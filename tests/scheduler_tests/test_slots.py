"""Slots: how GPUs become slots, and how a slot's share of its GPU counts against gpu_hours."""
from __future__ import annotations

import optuna
import pytest

from autotune import scheduler, store
from autotune.scheduler.gpus import detect_gpus, plan_slots
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers, objectives


@pytest.mark.parametrize("parallel, expected", [
    (ParallelSpec(gpus="auto", trials_per_gpu=1), [("0", 1.0), ("1", 1.0), ("2", 1.0)]),
    (ParallelSpec(gpus=2, trials_per_gpu=2), [("0", 0.5), ("0", 0.5), ("1", 0.5), ("1", 0.5)]),
    (ParallelSpec(gpus=[2], trials_per_gpu=4), [("2", 0.25)] * 4),
    (ParallelSpec(gpus=0, workers=3), [(None, 1.0)] * 3),
])
def test_plan_slots_pins_gpus_and_splits_each_among_its_trials(parallel, expected):
    slots = plan_slots(parallel, available=["0", "1", "2"])
    assert [(s.gpu, s.share) for s in slots] == expected
    assert [s.index for s in slots] == list(range(len(expected)))


def test_plan_slots_without_gpus_falls_back_to_cpu_workers():
    slots = plan_slots(ParallelSpec(gpus="auto", trials_per_gpu=4, workers=2), available=[])
    assert [(s.gpu, s.share, s.visible_devices) for s in slots] == [(None, 1.0, "")] * 2


def _two_slots_on_gpu_0(url: str, name: str, objective, budget: BudgetSpec) -> scheduler.RunResult:
    """A study run by two slots pinned to GPU "0", named explicitly: the slots pin it even where
    there is none (the objectives here use no GPU)."""
    study = store.create_or_load_study(store.open_storage(url), name, ["minimize"],
                                       pruner=optuna.pruners.NopPruner())
    return scheduler.run_study(study, storage_url=url, suggest=objectives.suggest_x,
                               objective=objective, budget=budget,
                               parallel=ParallelSpec(gpus=[0], trials_per_gpu=2))


def test_trials_sharing_a_gpu_each_count_their_share_of_gpu_hours(sqlite_url):
    result = _two_slots_on_gpu_0(sqlite_url, "shares",
                                 objectives.Quadratic(sqlite_url, "shares", steps=3, sleep_s=0.2),
                                 BudgetSpec(trials=4))
    trials = helpers.trials(sqlite_url, "shares")
    assert len(trials) == 4 and {t.user_attrs["gpu"] for t in trials} == {"0"}
    for t in trials:
        assert t.user_attrs["slot_seconds"] >= 0.6
        assert t.user_attrs["gpu_seconds"] == pytest.approx(t.user_attrs["slot_seconds"] / 2, abs=2e-3)
    assert result.gpu_seconds == pytest.approx(result.slot_seconds / 2)


def test_gpu_hours_budget_counts_a_shared_gpu_once(sqlite_url):
    # 2 s of GPU time is 4 s of slot time. Counted per slot (the old rule) the study would have
    # stopped after ~2 s of slot time.
    result = _two_slots_on_gpu_0(sqlite_url, "shared-budget",
                                 objectives.Quadratic(sqlite_url, "shared-budget", steps=5, sleep_s=0.1),
                                 BudgetSpec(trials=100, gpu_hours=2 / 3600))
    assert result.stopped_by == "gpu_hours"
    assert result.gpu_seconds >= 2.0 and result.slot_seconds >= 4.0
    assert result.completed >= 2


def test_gpus_are_found_without_cuda_visible_devices(monkeypatch):
    # tests/conftest.py sets CUDA_VISIBLE_DEVICES on machines without a GPU; here detection
    # runs as for a user who set nothing (nvidia-smi, else torch in a child process)
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == [str(i) for i in range(torch.cuda.device_count())]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert detect_gpus() == ["1", "3"]


def test_no_child_asks_torch_where_no_gpu_driver_shows(monkeypatch):
    # a Linux machine with no GPU driver (no /dev/nvidia*, /dev/kfd, /dev/dxg) and no nvidia-smi:
    # no child process is started to import torch (seconds before every run on a laptop)
    from autotune.scheduler import gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpus.sys, "platform", "linux")
    started = []
    monkeypatch.setattr(gpus.subprocess, "run", lambda *a, **k: started.append(a) or pytest.fail("asked torch"))
    monkeypatch.setattr(gpus.os.path, "exists", lambda path: False)
    gpus._detect_gpus.cache_clear()
    assert detect_gpus() == [] and not started

    class Answer:            # a driver node shows: torch is asked, in a child
        stdout = "2\n"
    monkeypatch.setattr(gpus.os.path, "exists", lambda path: path == "/dev/kfd")
    monkeypatch.setattr(gpus.subprocess, "run", lambda *a, **k: started.append(a) or Answer())
    gpus._detect_gpus.cache_clear()
    assert detect_gpus() == ["0", "1"] and len(started) == 1
    gpus._detect_gpus.cache_clear()


@pytest.mark.parametrize("parallel, n_slots", [
    (ParallelSpec(gpus="auto", trials_per_gpu=4), 4),
    (ParallelSpec(gpus="auto", trials_per_gpu=1), 1),
    (ParallelSpec(gpus=[0], trials_per_gpu=32), 32),
])
def test_gpu_slots_split_the_cores_among_their_workers(parallel, n_slots, monkeypatch):
    """Each GPU worker gets cores // slots torch threads (at least 1), not one per core each."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("autotune.scheduler.gpus.usable_cores", lambda: 16)
    slots = plan_slots(parallel, available=["0"])
    assert len(slots) == n_slots
    assert {s.env["OMP_NUM_THREADS"] for s in slots} == {str(max(1, 16 // n_slots))}
    assert {s.env["CUDA_VISIBLE_DEVICES"] for s in slots} == {"0"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")                         # the user's setting wins
    assert {s.threads for s in plan_slots(parallel, available=["0"])} == {3}
