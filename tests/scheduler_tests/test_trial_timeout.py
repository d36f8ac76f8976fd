"""Per-trial time limits: a hung trial fails with reason ``timeout ...`` and the study goes on."""
from __future__ import annotations


import optuna
import pytest
from optuna.trial import TrialState

from autotune.scheduler import policies
from autotune import scheduler, store
from autotune.spec import SpecError, load_spec
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers, objectives


# --- the study file ----------------------------------------------------------------------------
def _study_file(tmp_path, budget: str):
    path = tmp_path / "study.yaml"
    path.write_text(f"space: {{lr: {{type: float, low: 0.001, high: 0.01}}}}\n"
                    f"objectives: [{{metric: val_loss, direction: minimize}}]\nbudget: {budget}\n")
    return path


def test_budget_trial_timeout_is_a_duration_like_timeout(tmp_path):
    assert load_spec(_study_file(tmp_path, "{trials: 4, trial_timeout: 90s}")).budget.trial_timeout_s == 90
    assert load_spec(_study_file(tmp_path, "{trials: 4, trial_timeout: 1h30m}")).budget.trial_timeout_s == 5400
    assert load_spec(_study_file(tmp_path, "{trials: 4}")).budget.trial_timeout_s is None


@pytest.mark.parametrize("value", ["soon", "0s", -5])
def test_a_bad_trial_timeout_names_the_key(tmp_path, value):
    path = _study_file(tmp_path, f"{{trials: 4, trial_timeout: {value}}}")
    with pytest.raises(SpecError, match=f"^{path}: budget.trial_timeout: must be"):
        load_spec(path)


def test_trial_timeout_alone_is_no_budget(tmp_path):
    """It limits each trial, not the study: the study would still never end."""
    with pytest.raises(SpecError, match="needs at least one of trials, timeout, gpu_hours"):
        load_spec(_study_file(tmp_path, "{trial_timeout: 90s}"))


# --- the decisions ------------------------------------------------------------------------------
def test_the_study_files_trial_timeout_is_the_limit_from_the_first_trial():
    assert policies.trial_limit_s(90.0, []) == 90.0
    assert policies.trial_limit_s(90.0, [1000.0] * 5) == 90.0     # the user's word wins


def test_without_trial_timeout_there_is_no_limit_before_three_complete_trials():
    assert policies.trial_limit_s(None, []) is None
    assert policies.trial_limit_s(None, [5000.0, 5000.0]) is None


def test_the_default_limit_is_five_times_the_median_complete_trial():
    assert policies.trial_limit_s(None, [200.0, 300.0, 10_000.0]) == 1500.0   # median, not mean
    assert policies.trial_limit_s(None, [100.0, 200.0, 300.0, 400.0]) == 1250.0


def test_the_default_limit_never_falls_below_ten_minutes():
    """Short trials (or quick first ones) must not make a compiling GPU trial look hung."""
    assert policies.trial_limit_s(None, [2.0, 3.0, 4.0]) == policies.FLOOR_S == 600.0


def test_a_trial_times_out_only_past_its_limit():
    assert not policies.timed_out(started=100.0, now=190.0, limit_s=90.0)
    assert policies.timed_out(started=100.0, now=190.5, limit_s=90.0)
    assert not policies.timed_out(started=0.0, now=1e9, limit_s=None)


def test_the_reason_says_how_long_it_ran_and_where_the_limit_came_from():
    assert (policies.timeout_reason(612.4, 600.0, from_spec=True)
            == "timeout: ran 612 s, limit 600 s (budget.trial_timeout)")
    assert policies.timeout_reason(3001, 3000.0, from_spec=False).startswith(
        "timeout: ran 3001 s, limit 3000 s (default: 5 x the median complete trial")


# --- the scheduler applies them -----------------------------------------------------------------
def test_a_hung_trial_is_killed_with_its_subprocesses_and_the_study_meets_its_budget(
        storage_url, study_name, tmp_path):
    pid_file = tmp_path / "child.pid"
    study = store.create_or_load_study(
        store.open_storage(storage_url), study_name, ["minimize"],
        sampler=optuna.samplers.PartialFixedSampler({"x": 0}, optuna.samplers.RandomSampler()),
        pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"x": 5})                     # the first trial hangs
    result = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_kind,
        objective=objectives.HangsOnce(str(pid_file)),
        parallel=ParallelSpec(gpus=0, workers=1, max_retries=2),   # one slot: it must be freed
        budget=BudgetSpec(trials=3, timeout_s=300, trial_timeout_s=3))

    trials = helpers.trials(storage_url, study_name)
    (hung,) = [t for t in trials if t.state == TrialState.FAIL]
    assert hung.params == {"x": 5}
    assert hung.user_attrs["fail_reason"].startswith("timeout: ran ")
    assert hung.user_attrs["fail_reason"].endswith("limit 3 s (budget.trial_timeout)")
    assert 3 <= hung.user_attrs["slot_seconds"] < 120
    assert [t.state for t in trials if t.number != hung.number] == [TrialState.COMPLETE] * 3
    assert (result.stopped_by, result.completed, result.failed, result.retried) == ("trials", 3, 1, 0)
    assert not any("failed_trial" in t.system_attrs for t in trials)   # a timeout is not retried
    child = int(pid_file.read_text())              # the hung trial's subprocess died with it
    helpers.wait_until(lambda: not helpers.alive(child), 10)



def test_without_trial_timeout_the_limit_comes_from_the_studys_complete_trials(
        storage_url, study_name, tmp_path, monkeypatch):
    monkeypatch.setattr(policies, "FLOOR_S", 2.0)      # 10 minutes, in the real world
    study = store.create_or_load_study(
        store.open_storage(storage_url), study_name, ["minimize"],
        sampler=optuna.samplers.PartialFixedSampler({"x": 0}, optuna.samplers.RandomSampler()))
    dist = {"x": optuna.distributions.IntDistribution(0, 5)}
    for seconds in (0.1, 0.2, 0.3):                  # an earlier run's trials; 5 x 0.2 s < the floor
        study.add_trial(optuna.trial.create_trial(params={"x": 0}, distributions=dist, value=0.0,
                                                  user_attrs={"slot_seconds": seconds}))
    study.add_trial(optuna.trial.create_trial(      # pruned trials say nothing of a trial's length
        params={"x": 0}, distributions=dist, state=TrialState.PRUNED, user_attrs={"slot_seconds": 900}))
    complete = store.trial_user_attr_values(store.open_storage(storage_url), study._study_id,
                                            "slot_seconds", TrialState.COMPLETE)
    assert sorted(complete) == [0.1, 0.2, 0.3]
    study.enqueue_trial({"x": 5})
    result = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_kind,
        objective=objectives.HangsOnce(str(tmp_path / "child.pid")),
        parallel=ParallelSpec(gpus=0, workers=1), budget=BudgetSpec(trials=5, timeout_s=300))

    (hung,) = [t for t in helpers.trials(storage_url, study_name) if t.state == TrialState.FAIL]
    assert hung.user_attrs["fail_reason"].startswith("timeout: ran ")
    assert "limit 2 s (default: 5 x the median complete trial" in hung.user_attrs["fail_reason"]
    assert (result.stopped_by, result.completed, result.failed) == ("trials", 1, 1)
