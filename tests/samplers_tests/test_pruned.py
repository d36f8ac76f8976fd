"""Pruned trials as the GP sees them (autotune/samplers/_pruned.py)."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from autotune.samplers import build_sampler
from autotune.samplers._pruned import shown_as_complete

X = {"x": FloatDistribution(0.0, 1.0)}
MIN = [StudyDirection.MINIMIZE]


def _complete(number, value, **constraints):
    t = create_trial(params={"x": 0.1 * number}, distributions=X, value=value,
                     system_attrs=_constraints(constraints))
    t.number = number
    return t


def _pruned(number, step, value, **constraints):
    t = create_trial(state=TrialState.PRUNED, params={"x": 0.1 * number}, distributions=X,
                     intermediate_values={step: value}, system_attrs=_constraints(constraints))
    t.number = number
    return t


def _constraints(values):
    return {"constraints": list(values.values())} if values else {}


def test_pruned_trials_show_as_complete_below_the_worst_in_tpe_order():
    trials = [_complete(0, 1.0), _pruned(1, 2, 5.0), _complete(2, 3.0), _pruned(3, 4, 9.0),
              _pruned(4, 2, 4.0)]
    shown = shown_as_complete(trials, MIN)
    assert [t.state for t in shown] == [TrialState.COMPLETE] * 5
    assert [t.number for t in shown] == [0, 1, 2, 3, 4]
    values = {t.number: t.value for t in shown}
    # Later step ranks better (3), then the better last value at the same step (4 before 1).
    assert 3.0 < values[3] < values[4] < values[1]
    assert values[3] == pytest.approx(3.0 + 0.1 * 2.0) and values[1] == pytest.approx(3.0 + 2.0)
    assert trials[1].state == TrialState.PRUNED      # the study's own trials are left alone


def test_maximised_objectives_put_pruned_trials_below_the_lowest():
    shown = shown_as_complete([_complete(0, 1.0), _complete(1, 3.0), _pruned(2, 1, 0.5)],
                              [StudyDirection.MAXIMIZE])
    assert shown[2].value == pytest.approx(1.0 - 0.1 * 2.0)


@pytest.mark.parametrize("trials, directions", [
    ([_complete(0, 1.0), _pruned(1, 1, 2.0)], MIN),                                # one complete
    ([_complete(0, 1.0), _complete(1, float("inf")), _pruned(2, 1, 2.0)], MIN),     # one finite
    ([_complete(0, 1.0), _complete(1, 2.0), _pruned(2, 1, 2.0)], MIN * 2),          # several objectives
    ([_complete(0, 1.0, a=0.0), _complete(1, 2.0, a=1.0), _pruned(2, 1, 2.0)], MIN),  # no constraints stored
])
def test_pruned_trials_stay_pruned_where_no_scale_or_shape_fits(trials, directions):
    assert [t.state for t in shown_as_complete(trials, directions)] == [t.state for t in trials]


def test_a_constrained_gp_study_with_pruned_trials_runs_and_avoids_both(tmp_path):
    # GPSampler needs every trial it models to carry the same constraint names: pruned trials
    # store them (autotune sets constraints before pruning), so they can join its model.
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.set_constraint("x <= 0.8", x - 0.8)
        trial.report(x, 1)
        if x < 0.2:
            raise optuna.TrialPruned()
        return x

    study = optuna.create_study(sampler=build_sampler("gp", seed=0, n_startup_trials=5))
    study.optimize(objective, n_trials=20)
    assert sum(t.state == TrialState.PRUNED for t in study.trials) >= 1
    late = study.trials[10:]
    assert sum(t.params["x"] < 0.2 or t.params["x"] > 0.8 for t in late) <= 3, [t.params for t in late]
    assert 0.2 <= study.best_trial.params["x"] <= 0.3
