"""Many workers and many schedulers on one study finish exactly the budget."""
from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.pruners import build_pruner
from autotune.spec_types import BudgetSpec, ParallelSpec, PrunerSpec
from scheduler_tests import helpers, objectives


def _study(url: str, name: str) -> optuna.Study:
    return store.create_or_load_study(store.open_storage(url), name, ["minimize"],
                                      pruner=optuna.pruners.NopPruner())


def test_eight_workers_and_a_second_scheduler_finish_exactly_n_trials(storage_url, study_name,
                                                                      tmp_path):
    n_trials = 16
    study = _study(storage_url, study_name)
    reader = None
    if store.is_sqlite(storage_url):  # a dashboard and `autotune status` read the same file
        reader = helpers.start_reader(storage_url, tmp_path / "stop")
    other = helpers.spawn_run(storage_url, study_name, workers=2, trials=n_trials, steps=2)
    result = scheduler.run_study(
        study, storage_url=storage_url, suggest=objectives.suggest_x,
        objective=objectives.Quadratic(storage_url, study_name, steps=2),
        parallel=ParallelSpec(gpus=0, workers=8), budget=BudgetSpec(trials=n_trials))
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    other_result = json.loads(out.strip().splitlines()[-1])

    trials = helpers.trials(storage_url, study_name)
    assert sum(t.state in helpers.FINISHED for t in trials) == n_trials
    assert [t.state for t in trials if t.state not in helpers.FINISHED] == []   # no lock errors
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers)))
    assert result.completed + other_result["completed"] == n_trials   # NopPruner: nothing pruned
    assert result.stopped_by == other_result["stopped_by"] == "trials"
    assert {t.user_attrs["slot"] for t in trials} <= set(range(8))
    assert all(t.user_attrs["gpu"] is None and t.user_attrs["gpu_seconds"] > 0 for t in trials)
    if reader is not None:
        text = helpers.stop_reader(reader, tmp_path / "stop")
        assert "ERROR" not in text, text
        assert int(text.split("reads=")[1].split()[0]) > 0


def test_a_rerun_with_a_larger_budget_continues(sqlite_url):
    name = "continue"
    study = _study(sqlite_url, name)
    run = lambda n: scheduler.run_study(  # noqa: E731
        study, storage_url=sqlite_url, suggest=objectives.suggest_x,
        objective=objectives.Quadratic(sqlite_url, name, steps=1),
        parallel=ParallelSpec(gpus=0, workers=2), budget=BudgetSpec(trials=n))
    first, second, third = run(3), run(5), run(5)
    assert (first.completed, second.completed, third.completed) == (3, 2, 0)
    assert third.stopped_by == "trials" and third.finished_in_study == 5
    assert helpers.count(sqlite_url, name, TrialState.COMPLETE) == 5


@pytest.mark.slow
def test_sixteen_workers_on_one_sqlite_file_with_pruning_and_a_reader(sqlite_url, tmp_path):
    # The most README promises for SQLite: 16 local workers, each reporting every step (the
    # pruner's writes), while a dashboard-like reader polls the same file.
    name, n_trials = "sixteen", 48
    pruner = PrunerSpec(kind="median", startup_trials=4)
    study = store.create_or_load_study(store.open_storage(sqlite_url), name, ["minimize"],
                                       pruner=build_pruner(pruner, 9))
    reader = helpers.start_reader(sqlite_url, tmp_path / "stop")
    result = scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_q,
        objective=objectives.Curves(sqlite_url, name, pruner, steps=9),
        parallel=ParallelSpec(gpus=0, workers=16), budget=BudgetSpec(trials=n_trials))
    trials = helpers.trials(sqlite_url, name)
    assert result.stopped_by == "trials" and result.failed == 0
    assert sum(t.state in helpers.FINISHED for t in trials) == n_trials
    assert [t for t in trials if t.state not in helpers.FINISHED] == []
    assert result.pruned > 0
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.user_attrs["slot"] for t in trials}) > 8     # the slots really ran at once
    text = helpers.stop_reader(reader, tmp_path / "stop")
    assert "ERROR" not in text, text
    assert int(text.split("reads=")[1].split()[0]) > 0
