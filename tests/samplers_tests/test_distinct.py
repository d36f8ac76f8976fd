"""The duplicate guard: every optimizer kind proposes distinct configurations, in flight and over time."""
from __future__ import annotations

import logging

import optuna
import pytest
from optuna.trial import TrialState

from autotune.samplers import SAMPLER_KINDS, build_sampler
from tests.samplers_tests.test_samplers import FAST_OPTIONS

optuna.logging.set_verbosity(optuna.logging.WARNING)
# GP's suggestions take 1-2 s each on a shared 2-core machine: its cases run with the slow tests.
KINDS = [pytest.param(k, marks=pytest.mark.slow) if k == "gp" else k for k in SAMPLER_KINDS]


@pytest.fixture()
def storage(tmp_path):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")


def suggest_discrete(trial: optuna.Trial) -> tuple:
    """72 configurations: small enough that samplers collide without the guard."""
    return (trial.suggest_int("a", 0, 5), trial.suggest_categorical("b", ["p", "q", "r"]),
            trial.suggest_int("c", 0, 3))


def loss(a: int, b: str, c: int) -> float:
    return (a - 3) ** 2 + (b != "q") + 0.5 * abs(c - 1)


def configs(study: optuna.Study, *states: TrialState) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.get_trials(states=states or None)]


@pytest.mark.parametrize("kind", KINDS)
def test_four_trials_in_flight_get_four_new_configurations(kind, storage):
    study = optuna.create_study(storage=storage, sampler=build_sampler(kind, seed=0, **FAST_OPTIONS[kind]))
    for _ in range(8):
        trial = study.ask()
        study.tell(trial, loss(*suggest_discrete(trial)))
    for _ in range(4):
        suggest_discrete(study.ask())   # running: never told
    finished, running = configs(study, TrialState.COMPLETE), configs(study, TrialState.RUNNING)
    assert len(running) == len(set(running)) == 4
    assert not set(running) & set(finished)


@pytest.mark.parametrize("kind", KINDS)
def test_no_configuration_is_proposed_twice_in_20_trials(kind, storage):
    study = optuna.create_study(storage=storage, sampler=build_sampler(kind, seed=1, **FAST_OPTIONS[kind]))
    study.optimize(lambda t: loss(*suggest_discrete(t)), n_trials=20)
    proposals = configs(study)
    assert len(proposals) == len(set(proposals)) == 20


def test_a_space_with_no_new_configuration_left_gets_a_duplicate_said_once(storage, caplog):
    study = optuna.create_study(storage=storage, sampler=build_sampler("random", seed=0))
    with caplog.at_level(logging.WARNING, logger="autotune.samplers"):
        study.optimize(lambda t: t.suggest_int("n", 0, 2), n_trials=6)
    assert sorted(set(configs(study))) == [(("n", 0),), (("n", 1),), (("n", 2),)]
    assert len(study.trials) == 6
    assert sum("proposing a duplicate" in r.message for r in caplog.records) == 1
