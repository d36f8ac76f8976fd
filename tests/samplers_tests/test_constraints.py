"""Constraint values set on trials (Optuna's public ``Trial.set_constraint``): how every kind takes them."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from autotune.samplers import SAMPLER_KINDS, build_sampler
from autotune.samplers._constraints import penalized_values
from tests.samplers_tests.test_samplers import FAST_OPTIONS

optuna.logging.set_verbosity(optuna.logging.WARNING)
MIN, MAX = StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE


def trial(values, constraints=None):
    system_attrs = {f"constraints:{k}": v for k, v in (constraints or {}).items()}
    return optuna.trial.create_trial(values=values, system_attrs=system_attrs)


def test_optuna_reads_constraints_where_set_constraint_puts_them():
    """Pins the storage layout our test helper above writes (``constraints:<key>``)."""
    study = optuna.create_study()
    t = study.ask()
    t.set_constraint("latency_ms <= 5", 0.2)
    study.tell(t, 1.0)
    assert study.trials[0].system_attrs == {"constraints:latency_ms <= 5": 0.2}
    assert trial([1.0], {"latency_ms <= 5": 0.2}).constraints == {"latency_ms <= 5": 0.2}


def test_infeasible_trials_rank_below_all_feasible_ones_by_total_violation():
    trials = [trial([1.0], {"a": 0.0}), trial([5.0], {"a": -1.0}), trial([0.1], {"a": 0.5}),
              trial([0.0], {"a": 2.0}), trial([3.0])]
    ranked = penalized_values(trials, [MIN])[:, 0]
    assert list(np.argsort(ranked)) == [0, 4, 1, 2, 3]


def test_infeasible_trials_are_dominated_by_every_feasible_one_in_every_objective():
    trials = [trial([1.0, 9.0], {"a": 0.0}), trial([9.0, 1.0], {"a": 0.0}),
              trial([0.0, 10.0], {"a": 1.0})]
    ranked = penalized_values(trials, [MIN, MAX])
    assert ranked[2, 0] > 9.0 and ranked[2, 1] < 1.0
    assert penalized_values(trials[:2], [MIN, MAX]).tolist() == [[1.0, 9.0], [9.0, 1.0]]


@pytest.mark.parametrize("kind", [k if k != "gp" else pytest.param(k, marks=pytest.mark.slow)
                                  for k in SAMPLER_KINDS])
def test_every_kind_runs_a_constrained_study_and_its_best_trial_is_feasible(kind, tmp_path):
    """x >= 0.5 is infeasible; the unconstrained optimum x = 1 lies there."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.db'}")
    study = optuna.create_study(storage=storage, sampler=build_sampler(kind, seed=0, **FAST_OPTIONS[kind]))
    for _ in range(20):
        t = study.ask()
        x = t.suggest_float("x", 0.0, 1.0)
        t.suggest_int("n", 0, 3)
        t.set_constraint("x <= 0.5", (x - 0.5) / 0.5)
        study.tell(t, (x - 1.0) ** 2)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 20
    assert study.best_trial.params["x"] <= 0.5
    late = [t for t in study.trials[10:] if t.params["x"] <= 0.5]
    # random and cmaes ignore constraints; GP's constrained acquisition keeps probing just past the
    # boundary, where the objective is best (2 of its last 10 trials feasible in one full-suite run,
    # 5+ in another): for it the feasible best is the behaviour pinned here
    if kind not in ("random", "cmaes", "gp"):
        assert len(late) >= 5, [round(t.params["x"], 2) for t in study.trials]
