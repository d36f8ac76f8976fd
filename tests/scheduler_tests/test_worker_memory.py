"""What a worker leaves behind between trials: garbage, GPU memory, the GPU it is pinned to."""
from __future__ import annotations

import json

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import objectives

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(url: str, tmp_path, xs: list[int], parallel: ParallelSpec, gpu_mib: int = 0,
         sleep_s: float = 0.0):
    study = store.create_or_load_study(store.open_storage(url), "mem", ["minimize"],
                                       sampler=optuna.samplers.RandomSampler(seed=0))
    for x in xs:
        study.enqueue_trial({"x": x})
    result = scheduler.run_study(
        study, storage_url=url, suggest=lambda t: {"x": t.suggest_int("x", -1, 100)},
        objective=objectives.LeavesGarbage(str(tmp_path), gpu_mib, sleep_s), parallel=parallel,
        budget=BudgetSpec(trials=sum(x >= 0 for x in xs)))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    seen = {t.number: json.loads((tmp_path / f"{t._trial_id}.json").read_text()) for t in trials
            if (tmp_path / f"{t._trial_id}.json").exists()}
    return result, trials, seen


def test_a_trials_reference_cycles_are_collected_before_the_next_trial(sqlite_url, tmp_path):
    _, trials, seen = _run(sqlite_url, tmp_path, [0, 1, 2, 3], ParallelSpec(gpus=0, workers=1))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [seen[n]["cycles_alive"] for n in range(4)] == [0, 0, 0, 0]


def test_slots_on_two_gpus_pin_each_trial_to_its_own(sqlite_url, tmp_path):
    # Named GPUs are pinned even where there is none (these trials use no GPU): the CPU check of
    # what the two-GPU run relies on. Two slots per GPU, eight trials of 1 s: both GPUs get trials.
    _, trials, seen = _run(sqlite_url, tmp_path, list(range(8)),
                           ParallelSpec(gpus=[0, 1], trials_per_gpu=2), sleep_s=1.0)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    for t in trials:
        assert t.user_attrs["gpu"] in ("0", "1")
        assert seen[t.number]["visible"] == t.user_attrs["gpu"]
        assert t.user_attrs["gpu_seconds"] == pytest.approx(t.user_attrs["slot_seconds"] / 2, abs=2e-3)
    assert {t.user_attrs["gpu"] for t in trials} == {"0", "1"}


@pytest.mark.gpu
@needs_gpu
def test_gpu_memory_returns_to_baseline_between_trials(sqlite_url, tmp_path):
    _, trials, seen = _run(sqlite_url, tmp_path, [0, 1, 2], ParallelSpec(gpus=1, trials_per_gpu=1),
                           gpu_mib=1024)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    first = seen[0]
    for n in (1, 2):   # each trial left 1 GiB in a reference cycle; the next starts without it
        assert seen[n]["cycles_alive"] == 0
        assert seen[n]["allocated"] == first["allocated"]
        assert seen[n]["reserved"] <= first["reserved"] + (64 << 20)


@pytest.mark.gpu
@needs_gpu
def test_each_slot_sees_only_its_own_gpu_and_an_out_of_memory_trial_frees_it(sqlite_url, tmp_path):
    n_gpus = torch.cuda.device_count()
    xs = [-1] + list(range(4 * n_gpus))     # the first trial asks for 512 TiB
    result, trials, seen = _run(sqlite_url, tmp_path, xs,
                                ParallelSpec(gpus="auto", trials_per_gpu=2), gpu_mib=256)
    oom = trials[0]
    assert oom.state == TrialState.FAIL and "OutOfMemoryError" in oom.user_attrs["fail_reason"]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4 * n_gpus and result.failed == 1
    for t in done:
        assert seen[t.number]["devices"] == 1
        assert seen[t.number]["visible"] == t.user_attrs["gpu"]
    assert {t.user_attrs["gpu"] for t in done} == {str(i) for i in range(n_gpus)}
