"""Search spaces become Optuna distributions and suggestions that honour conditions."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from autotune import space
from autotune.spec import parse_spec

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
    "keep_ratio": {"type": "float", "low": 0.2, "high": 0.8, "step": 0.2, "when": {"attention": "sparse"}},
    "window": {"type": "categorical", "choices": [32, 64], "when": {"attention": ["sparse"]}},
    "attention": {"type": "categorical", "choices": ["sparse", "dense"]},
}


def spec_space():
    return parse_spec({"space": SPACE, "objectives": [{"metric": "val_loss", "direction": "minimize"}],
                       "budget": {"trials": 1}}).space


def test_distributions_of_every_kind():
    d = space.distributions(spec_space())
    assert d["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["batch_size"] == IntDistribution(16, 64, step=16)
    assert d["keep_ratio"] == FloatDistribution(0.2, 0.8, step=0.2)
    assert d["attention"] == CategoricalDistribution(["sparse", "dense"])


def test_conditions_come_after_what_they_depend_on():
    names = spec_space().names
    assert names.index("attention") < names.index("keep_ratio")
    assert names.index("attention") < names.index("window")


@pytest.mark.parametrize("seed", range(5))
def test_suggest_honours_bounds_steps_and_conditions(seed):
    sp = spec_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        values = space.suggest(trial, sp)
        seen.add(values["attention"])
        assert 1e-4 <= values["lr"] <= 1e-2
        assert values["batch_size"] in (16, 32, 48, 64)
        if values["attention"] == "sparse":
            assert round(values["keep_ratio"] / 0.2, 6) == round(values["keep_ratio"] / 0.2)
            assert values["window"] in (32, 64)
        else:
            assert "keep_ratio" not in values and "window" not in values
            assert set(trial.params) == {"lr", "batch_size", "attention"}
        study.tell(trial, 0.0)
    assert seen == {"sparse", "dense"}
