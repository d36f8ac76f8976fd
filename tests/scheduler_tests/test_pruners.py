"""Early stopping from the spec's ``pruner:`` block, on synthetic learning curves, with workers."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.pruners import build_pruner
from autotune.spec_types import BudgetSpec, ParallelSpec, PrunerSpec
from scheduler_tests import helpers, objectives


@pytest.mark.parametrize("kind, cls", [
    ("none", optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
    ("percentile", optuna.pruners.PercentilePruner),
    ("sha", optuna.pruners.SuccessiveHalvingPruner), ("hyperband", optuna.pruners.HyperbandPruner),
])
def test_build_pruner_maps_every_kind_onto_optunas_pruner(kind, cls):
    assert type(build_pruner(PrunerSpec(kind=kind, min_steps=10), steps=600)) is cls


def test_hyperband_runs_up_to_the_trainer_steps_unless_max_steps_is_given():
    assert build_pruner(PrunerSpec(kind="hyperband", min_steps=50), 600)._max_resource == 600
    assert build_pruner(PrunerSpec(kind="hyperband", max_steps=300), 600)._max_resource == 300


def test_unknown_pruner_kind_is_an_error():
    with pytest.raises(ValueError, match="pruner kind 'asha'"):
        build_pruner(PrunerSpec(kind="asha"), None)


def _run_curves(url: str, name: str, pruner: PrunerSpec, qs: list[float], steps: int):
    study = store.create_or_load_study(store.open_storage(url), name, ["minimize"],
                                       pruner=build_pruner(pruner, steps))
    for q in qs:
        study.enqueue_trial({"x": q})
    scheduler.run_study(
        study, storage_url=url, suggest=objectives.suggest_q,
        objective=objectives.Curves(url, name, pruner, steps=steps),
        parallel=ParallelSpec(gpus=0, workers=2), budget=BudgetSpec(trials=len(qs)))
    trials = helpers.trials(url, name)
    assert len(trials) == len(qs) and all(t.state in helpers.FINISHED for t in trials)
    return {t.params["x"]: t for t in trials}


def test_median_pruner_stops_exactly_the_curves_above_the_median(sqlite_url):
    # Good curves (q = 0.5, all alike: never above a median of their own, which it takes to be
    # pruned) and bad ones (q >= 5) interleaved after the two startup trials. Whichever order the
    # two workers run and finish them in (a worker can start seconds after the other), a bad trial
    # starts only after two trials finished, and so exactly the bad ones stop, at their first report.
    qs = [0.5, 0.5, 0.5, 5.0, 0.5, 6.0, 7.0, 0.5, 8.0]
    study = store.create_or_load_study(store.open_storage(sqlite_url), "median", ["minimize"],
                                       pruner=build_pruner(PrunerSpec(kind="median", startup_trials=2), 9))
    for q in qs:
        study.enqueue_trial({"x": q})
    scheduler.run_study(
        study, storage_url=sqlite_url, suggest=objectives.suggest_q,
        objective=objectives.Curves(sqlite_url, "median", PrunerSpec(kind="median", startup_trials=2),
                                    steps=9),
        parallel=ParallelSpec(gpus=0, workers=2), budget=BudgetSpec(trials=len(qs)))
    trials = helpers.trials(sqlite_url, "median")
    assert sorted(t.params["x"] for t in trials) == sorted(qs)
    for t in trials:
        if t.params["x"] >= 5:   # a pruned trial keeps its curve, stopped at the first step judged
            assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [1]
        else:
            assert t.state == TrialState.COMPLETE and len(t.intermediate_values) == 9


@pytest.mark.parametrize("kind", ["sha", "hyperband"])
def test_halving_pruners_keep_the_best_curve_and_stop_the_worst(sqlite_url, kind):
    qs = [0.3, 4.0, 2.0, 0.9, 6.0, 0.05, 3.0, 5.0, 1.5, 7.0, 0.6, 8.0]
    spec = PrunerSpec(kind=kind, min_steps=1, reduction_factor=3)
    by_q = _run_curves(sqlite_url, kind, spec, qs, 9)
    assert by_q[0.05].state == TrialState.COMPLETE
    assert by_q[0.05].intermediate_values[9] == pytest.approx(0.05 + 1 / 9)
    pruned = [q for q, t in by_q.items() if t.state == TrialState.PRUNED]
    assert pruned, "nothing was pruned"
    assert max(q for q, t in by_q.items() if t.state == TrialState.COMPLETE) < max(pruned)
    for q in pruned:   # the curve up to the rung where it stopped is kept
        assert by_q[q].intermediate_values and min(by_q[q].intermediate_values) == 1
