"""Crash isolation, retries, the death of the scheduler itself, budgets and Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from autotune import outcomes, scheduler, store
from autotune.scheduler import policies
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers, objectives


def _study(url: str, name: str, fixed_x: int | None = None) -> optuna.Study:
    sampler = None if fixed_x is None else optuna.samplers.PartialFixedSampler(
        {"x": fixed_x}, optuna.samplers.RandomSampler())
    return store.create_or_load_study(store.open_storage(url), name, ["minimize"], sampler=sampler,
                                      pruner=optuna.pruners.NopPruner())


def _run(study, url, **budget):
    return scheduler.run_study(
        study, storage_url=url, suggest=objectives.suggest_kind,
        objective=objectives.Behaves(url, study.study_name, marker=budget.pop("marker", "")),
        parallel=ParallelSpec(gpus=0, workers=2, max_retries=1, heartbeat_interval=1,
                              grace_period=3),
        budget=BudgetSpec(**budget))


def test_raise_nan_exit_and_sigkill_fail_their_trial_and_the_study_goes_on(sqlite_url, tmp_path):
    study = _study(sqlite_url, "faulty", fixed_x=0)   # fresh trials (x=0) succeed
    for kind in (1, 2, 3, 4):  # raise, NaN, os._exit(3), SIGKILL mid-trial (first time only)
        study.enqueue_trial({"x": kind})
    result = _run(study, sqlite_url, trials=4, marker=str(tmp_path / "killed-once"))

    by_kind: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in helpers.trials(sqlite_url, "faulty"):
        by_kind.setdefault(int(t.params["x"]), []).append(t)
    reasons = lambda k: [t.user_attrs.get("fail_reason") for t in by_kind[k]]  # noqa: E731
    assert [t.state for t in by_kind[1]] == [TrialState.FAIL]          # an exception: no retry
    assert reasons(1) == ["RuntimeError: boom from the objective"]
    assert [t.state for t in by_kind[2]] == [TrialState.FAIL]
    assert "non-finite" in reasons(2)[0]
    assert [t.state for t in by_kind[3]] == [TrialState.FAIL] * 2      # died: retried once
    assert reasons(3) == ["worker process exited with code 3"] * 2
    assert [t.state for t in by_kind[4]] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "SIGKILL" in reasons(4)[0]
    retried = by_kind[4][1]
    assert retried.system_attrs["failed_trial"] == by_kind[4][0].number
    assert "fail_reason" not in retried.user_attrs
    assert sum(t.state == TrialState.COMPLETE for t in helpers.trials(sqlite_url, "faulty")) == 4
    assert result.stopped_by == "trials" and result.retried == 2


def test_killing_the_scheduler_loses_no_finished_trial_and_a_rerun_completes(storage_url,
                                                                             study_name):
    n_trials = 6
    _study(storage_url, study_name)
    child = helpers.spawn_run(storage_url, study_name, workers=2, trials=n_trials, steps=4,
                              sleep_s=0.4, grace=2)
    helpers.wait_until(lambda: helpers.count(storage_url, study_name, TrialState.COMPLETE) >= 2
                       and helpers.count(storage_url, study_name, TrialState.RUNNING) >= 1, 120)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    before = {t.number: t.values for t in helpers.trials(storage_url, study_name)
              if t.state == TrialState.COMPLETE}
    stranded = {t.number for t in helpers.trials(storage_url, study_name)
                if t.state == TrialState.RUNNING}
    assert stranded

    study = _study(storage_url, study_name)
    result = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_x,
        objective=objectives.Quadratic(storage_url, study_name, steps=1),
        parallel=ParallelSpec(gpus=0, workers=2, heartbeat_interval=1, grace_period=2),
        budget=BudgetSpec(trials=n_trials))

    trials = {t.number: t for t in helpers.trials(storage_url, study_name)}
    assert {n: trials[n].values for n in before} == before          # nothing finished was lost
    for n in stranded - set(before):   # the stranded trials failed, and ran again as retries
        if trials[n].state == TrialState.FAIL:
            assert "no heartbeat" in trials[n].user_attrs["fail_reason"]
            assert any(t.system_attrs.get("failed_trial") == n for t in trials.values())
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == n_trials
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    assert result.finished_in_study == n_trials


def test_worker_processes_die_with_their_scheduler(sqlite_url):
    _study(sqlite_url, "orphans", fixed_x=5)              # x=5: sleeps for ten minutes
    child = helpers.spawn_run(sqlite_url, "orphans", objective="behaves", fixed_x=5, workers=2,
                              trials=2)
    helpers.wait_until(lambda: helpers.count(sqlite_url, "orphans", TrialState.RUNNING) == 2, 120)
    workers = _children(child.pid)
    assert len(workers) >= 2
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    helpers.wait_until(lambda: not any(helpers.alive(pid) for pid in workers), 10)


@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM"])
def test_ctrl_c_interrupts_running_trials_and_returns_promptly(sqlite_url, how):
    _study(sqlite_url, "interrupt", fixed_x=5)
    child = helpers.spawn_run(sqlite_url, "interrupt", objective="behaves", fixed_x=5, workers=2,
                              trials=10)
    helpers.wait_until(lambda: helpers.count(sqlite_url, "interrupt", TrialState.RUNNING) == 2, 120)
    sent = time.monotonic()
    if how == "SIGTERM":
        os.kill(child.pid, signal.SIGTERM)
    else:   # what a terminal does on Ctrl-C: every process of the foreground group gets it
        os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert time.monotonic() - sent < 15
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] and result["stopped_by"] == "interrupted"
    assert result["interrupted_trials"] == 2 and result["failed"] == 0 and result["retried"] == 0
    trials = helpers.trials(sqlite_url, "interrupt")
    cut = [t for t in trials if t.state == TrialState.FAIL]
    assert [outcomes.outcome(t) for t in cut] == ["interrupted"] * 2
    assert {t.user_attrs["interrupted_by"] for t in cut} == {"SIGTERM" if how == "SIGTERM" else "SIGINT"}
    assert not any("fail_reason" in t.user_attrs for t in cut)
    waiting = [t for t in trials if t.state == TrialState.WAITING]    # re-queued for the next run
    assert sorted(t.system_attrs[outcomes.RERUN_OF_ATTR] for t in waiting) == sorted(t.number for t in cut)
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_hard_stop_interrupts_running_trials_and_the_next_run_reruns_them_first(storage_url, study_name,
                                                                                tmp_path):
    hold = tmp_path / "hold"      # x=5 runs while this file exists
    hold.write_text("")
    study = _study(storage_url, study_name)
    for x in (5, 0, 0):           # one slot: the x=0 ones are still queued when the budget runs out
        study.enqueue_trial({"x": x})
    parallel = ParallelSpec(gpus=0, workers=1)
    result = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_kind,
        objective=objectives.Behaves(storage_url, study_name, hold=str(hold)), parallel=parallel,
        budget=BudgetSpec(trials=5, gpu_hours=2 / 3600), hard_stop=True)
    assert result.stopped_by == "gpu_hours"
    assert (result.interrupted_trials, result.failed, result.completed) == (1, 0, 0)
    (cut,) = [t for t in helpers.trials(storage_url, study_name) if t.state == TrialState.FAIL]
    assert outcomes.outcome(cut) == "interrupted" and cut.user_attrs["interrupted_by"] == "gpu_hours"
    assert cut.params == {"x": 5} and 2 <= cut.user_attrs["gpu_seconds"] < 30

    hold.unlink()
    resumed = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_kind,
        objective=objectives.Behaves(storage_url, study_name, hold=str(hold)), parallel=parallel,
        budget=BudgetSpec(trials=3))
    assert resumed.stopped_by == "trials" and resumed.completed == 3
    ran = sorted((t for t in helpers.trials(storage_url, study_name) if t.state == TrialState.COMPLETE),
                 key=lambda t: t.datetime_start)
    rerun = ran[0]                # ahead of the two trials queued before it
    assert rerun.system_attrs[outcomes.RERUN_OF_ATTR] == cut.number and rerun.params == {"x": 5}
    assert rerun.number > max(t.number for t in ran[1:])
    assert "stop_reason" not in rerun.user_attrs


def test_timeout_stops_handing_out_trials_and_lets_running_ones_finish(sqlite_url):
    study = _study(sqlite_url, "timeout")
    result = scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_x,
        objective=objectives.Quadratic(sqlite_url, "timeout", steps=2, sleep_s=0.1),
        parallel=ParallelSpec(gpus=0, workers=2), budget=BudgetSpec(trials=1000, timeout_s=3))
    assert result.stopped_by == "timeout"
    trials = helpers.trials(sqlite_url, "timeout")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(trials) == result.completed < 1000


def test_gpu_hours_budget_stops_handing_out_trials(sqlite_url):
    study = _study(sqlite_url, "gpuh")
    result = scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_x,
        objective=objectives.Quadratic(sqlite_url, "gpuh", steps=4, sleep_s=0.25),
        parallel=ParallelSpec(gpus=0, workers=1), budget=BudgetSpec(trials=50, gpu_hours=1.5 / 3600))
    assert result.stopped_by == "gpu_hours"
    assert 1 <= result.completed <= 2


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out



def test_a_run_whose_every_trial_fails_stops_instead_of_burning_the_budget(sqlite_url):
    study = _study(sqlite_url, "broken", fixed_x=1)          # x=1: the objective raises
    result = scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_kind,
        objective=objectives.Behaves(sqlite_url, "broken"),
        parallel=ParallelSpec(gpus=0, workers=2), budget=BudgetSpec(trials=100))
    assert result.stopped_by == "failures"
    assert policies.FAILURE_STREAK <= result.failed <= policies.FAILURE_STREAK + 1
