"""Pruned source trials: never enqueued; shown to the prior's sampler as pruned, below complete ones."""
from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

from autotune import space, store, warmstart
from autotune.spec_types import SearchSpace

from .helpers import add_source, fl, make_spec

SPACE = SearchSpace((fl("x", 0.0, 1.0),))
DISTS = space.distributions(SPACE)


def add_pruned(study, x, curve):
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": x},
                                              distributions=DISTS, intermediate_values=curve))


def source_with_pruned(storage, n_complete=20, n_pruned=10, seed=0):
    """Complete trials on [0, 0.8] (best at 0.5); pruned ones on [0.8, 1] whose last reported
    value (-100) would beat every complete trial if it were read as a result."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0.0, 0.8, size=n_complete)
    study = add_source(storage, "old", SPACE, [({"x": float(x)}, float((x - 0.5) ** 2)) for x in xs])
    for x in rng.uniform(0.8, 1.0, size=n_pruned):
        add_pruned(study, float(x), {1: 5.0, 3: -100.0})
    return study


def test_pruned_source_trials_are_never_enqueued(url, storage):
    study = add_source(storage, "old", SPACE, [({"x": 0.1}, 3.0), ({"x": 0.2}, 2.0)])
    add_pruned(study, 0.9, {3: -100.0})
    add_pruned(study, 0.8, {})
    _, apply = warmstart.prepare(make_spec(url, SPACE, best_k=5), storage, None)
    new = store.create_or_load_study(storage, "new", ["minimize"])
    assert apply(new) == {"old": 2}
    assert [t.system_attrs["fixed_params"] for t in new.trials] == [{"x": 0.2}, {"x": 0.1}]


def test_prior_shows_pruned_source_trials_as_pruned_with_their_curve(url, storage):
    source_with_pruned(storage, n_complete=4, n_pruned=3)
    seen = {}

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, dist):
            shown = [t for t in study.get_trials(deepcopy=False) if t.number < 0]
            seen["states"] = sorted(t.state.name for t in shown)
            seen["curves"] = [t.intermediate_values for t in shown if t.state == TrialState.PRUNED]
            seen["complete_only"] = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            return super().sample_independent(study, trial, name, dist)

    sampler, apply = warmstart.prepare(make_spec(url, SPACE, strategy="prior"), storage, Spy(seed=0))
    study = store.create_or_load_study(storage, "new", ["minimize"], sampler=sampler)
    assert apply(study) == {"old": 7}                    # pruned ones count as carried
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert seen["states"] == ["COMPLETE"] * 4 + ["PRUNED"] * 3
    assert seen["curves"] == [{1: 5.0, 3: -100.0}] * 3
    assert seen["complete_only"] == 4                    # a state filter keeps them out


def test_tpe_keeps_away_from_configurations_the_source_pruned(url, storage):
    source_with_pruned(storage)
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=10)
    sampler, apply = warmstart.prepare(make_spec(url, SPACE, strategy="prior"), storage, tpe)
    study = store.create_or_load_study(storage, "new", ["minimize"], sampler=sampler)
    apply(study)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.5) ** 2, n_trials=15)
    xs = np.asarray([t.params["x"] for t in study.trials])
    # ranked below every complete trial, the pruned region is TPE's "bad" side; read as results
    # (value -100) it would be where TPE samples
    assert np.mean(xs > 0.8) <= 0.1
    assert np.median(np.abs(xs - 0.5)) < 0.15


def pruned_trial(x, step, value):
    return optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": x}, distributions=DISTS,
                                     intermediate_values={step: value})


def complete_trial(x, value):
    return optuna.trial.create_trial(params={"x": x}, distributions=DISTS, value=value)


def test_pruned_curves_are_mapped_onto_own_pruned_trials_of_the_same_rank():
    # source: pruned at step 30 with values 0.1, 0.2 (best two) and step 10 with 0.05 (worst:
    # stopped earlier); own: pruned at steps 5 and 2, on another scale
    src = [pruned_trial(0.1, 30, 0.2), pruned_trial(0.2, 30, 0.1), pruned_trial(0.3, 10, 0.05)]
    prior = warmstart.PriorSampler(optuna.samplers.RandomSampler(), src, fade_trials=1000)
    own = [pruned_trial(0.5, 5, 7.0), pruned_trial(0.6, 5, 9.0), pruned_trial(0.7, 2, 1.0)]
    shown = {t.params["x"]: t.intermediate_values for t in prior.visible_sources(own)}
    assert shown == {0.2: {5: 7.0}, 0.1: {5: 9.0}, 0.3: {2: 1.0}}
    assert src[0].intermediate_values == {30: 0.2}                      # originals untouched
    # too few own pruned trials to map onto: the source's curves as they are
    assert {t.params["x"]: t.intermediate_values
            for t in prior.visible_sources(own[:2])}[0.1] == {30: 0.2}


def test_maximized_pruned_curves_rank_the_highest_value_first():
    src = [pruned_trial(0.1, 30, 0.2), pruned_trial(0.2, 30, 0.1)]
    prior = warmstart.PriorSampler(optuna.samplers.RandomSampler(), src, fade_trials=1000)
    own = [pruned_trial(0.5, 5, 7.0), pruned_trial(0.6, 5, 9.0), pruned_trial(0.7, 5, 8.0)]
    shown = prior.visible_sources(own, optuna.study.StudyDirection.MAXIMIZE)
    assert {t.params["x"]: t.intermediate_values for t in shown} == {0.1: {5: 9.0}, 0.2: {5: 7.0}}


def test_relevance_and_value_mapping_read_complete_source_trials_only():
    src = [complete_trial(i / 10, float(i)) for i in range(10)] + [pruned_trial(0.95, 3, -1.0)]
    prior = warmstart.PriorSampler(optuna.samplers.RandomSampler(), src, fade_trials=1000)
    own = [complete_trial(x, 100.0 + 10 * x) for x in (0.1, 0.4, 0.8, 0.3)]
    shown = prior.visible_sources(own)
    complete = [t for t in shown if t.state == TrialState.COMPLETE]
    assert len(shown) == 11 and len(complete) == 10
    assert all(101.0 <= t.value <= 108.0 for t in complete)
    assert [t.intermediate_values for t in shown if t.state == TrialState.PRUNED] == [{3: -1.0}]
