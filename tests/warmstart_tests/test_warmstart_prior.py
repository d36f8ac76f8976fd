"""The ``prior`` strategy: earlier trials inform the sampler without joining the study."""
from __future__ import annotations

import numpy as np
import optuna
import pytest

from autotune import space, store, warmstart
from autotune._optuna import storage_of, study_id_of, trial_id_of
from autotune.samplers._distinct import DistinctSampler
from autotune.samplers.evolution import EvolutionSampler
from autotune.warmstart._prior import PriorSampler, relevance
from autotune.spec_types import SearchSpace

from .helpers import add_source, cat, fl, it, make_spec

SPACE = SearchSpace((fl("x", 0.0, 1.0), fl("y", 0.0, 1.0)))
OPTIMUM = (0.8, 0.2)


def bowl(params):
    return (params["x"] - OPTIMUM[0]) ** 2 + (params["y"] - OPTIMUM[1]) ** 2


def add_bowl_source(storage, name="old", n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        p = {"x": float(rng.uniform()), "y": float(rng.uniform())}
        rows.append((p, bowl(p)))
    return add_source(storage, name, SPACE, rows)


def new_study(url, storage, spec, inner):
    sampler, apply = warmstart.prepare(spec, storage, inner)
    study = store.create_or_load_study(storage, spec.study, spec.directions, sampler=sampler)
    return study, apply(study)


def test_prior_adds_no_trials_and_records_provenance(url, storage):
    add_bowl_source(storage, n=30)
    study, counts = new_study(url, storage, make_spec(url, SPACE, strategy="prior"),
                              optuna.samplers.TPESampler(seed=0))
    assert counts == {"old": 30}
    assert study.trials == []
    study.optimize(lambda t: bowl(space.suggest(t, SPACE)), n_trials=5)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert study.best_trial.number in range(5)
    assert all("warm_start_from" not in t.user_attrs for t in study.trials)
    assert study.user_attrs["warm_start"] == {"strategy": "prior", "sources": {"old": 30},
                                              "out_of_range": "clip"}
    assert len(optuna.load_study(study_name="old", storage=storage).trials) == 30


def first_proposals(study, n):
    xs = []
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial, SPACE)
        study.tell(trial, bowl(params))
        xs.append(np.hypot(params["x"] - OPTIMUM[0], params["y"] - OPTIMUM[1]))
    return np.asarray(xs)


def test_prior_makes_tpe_propose_near_the_source_optimum_from_the_first_trial(url, storage):
    add_bowl_source(storage)
    warm, _ = new_study(url, storage, make_spec(url, SPACE, study="warm", strategy="prior"),
                        optuna.samplers.TPESampler(seed=1, n_startup_trials=10))
    cold = optuna.create_study(storage=storage, study_name="cold",
                               sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=10))
    warm_dist, cold_dist = first_proposals(warm, 10), first_proposals(cold, 10)
    # cold TPE samples at random for its first 10 trials (median distance ~0.45)
    assert np.median(warm_dist) < 0.2 < np.median(cold_dist)


def test_the_inner_sampler_sees_source_trials_first_numbered_minus_one(url, storage):
    add_bowl_source(storage, n=8)
    seen = {}

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, dist):
            seen["numbers"] = [t.number for t in study.get_trials(deepcopy=False)]
            seen["from"] = {t.user_attrs.get("warm_start_from") for t in study.trials if t.number < 0}
            return super().sample_independent(study, trial, name, dist)

    study, _ = new_study(url, storage, make_spec(url, SPACE, strategy="prior"), Spy(seed=0))
    study.optimize(lambda t: bowl(space.suggest(t, SPACE)), n_trials=2)
    assert seen["numbers"] == [-1] * 8 + [0, 1]
    assert seen["from"] == {"old"}


def test_source_trials_fade_out_as_own_trials_accumulate():
    sp = SearchSpace((fl("x", 0.0, 1.0),))
    dists = space.distributions(sp)
    src = [optuna.trial.create_trial(params={"x": i / 10}, distributions=dists, value=float(i))
           for i in range(10)]
    prior = warmstart.PriorSampler(optuna.samplers.RandomSampler(), src, fade_trials=20)
    own = [optuna.trial.create_trial(params={"x": 0.5}, distributions=dists, value=100.0 + i)
           for i in range(20)]
    shown = [len(prior.visible_sources(own[:n])) for n in (0, 5, 10, 18, 20)]
    assert shown == [10, 8, 5, 1, 0]
    # the same trials stay while they are shown: the share that goes is fixed, not redrawn
    assert {t.params["x"] for t in prior.visible_sources(own[:10])} <= {
        t.params["x"] for t in prior.visible_sources(own[:5])}


def test_source_values_are_ranked_into_the_own_values_once_there_are_some():
    sp = SearchSpace((fl("x", 0.0, 1.0),))
    dists = space.distributions(sp)
    # the source problem is 1000x the scale of this one: raw values would never mix
    src = [optuna.trial.create_trial(params={"x": i / 4}, distributions=dists, value=1000.0 * i)
           for i in range(5)]
    prior = warmstart.PriorSampler(optuna.samplers.RandomSampler(), src, fade_trials=1000)
    own = [optuna.trial.create_trial(params={"x": 0.5}, distributions=dists, value=v)
           for v in (1.0, 2.0, 3.0, 4.0, 5.0)]
    values = [t.value for t in prior.visible_sources(own)]
    assert values == sorted(values)
    assert 1.0 <= values[0] and values[-1] <= 5.0
    assert [t.value for t in src] == [0.0, 1000.0, 2000.0, 3000.0, 4000.0]   # originals untouched


@pytest.mark.parametrize("make", [
    lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
    lambda: optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=2),
    lambda: optuna.samplers.RandomSampler(seed=0),
    lambda: optuna.samplers.CmaEsSampler(seed=0, n_startup_trials=2),
    lambda: optuna.samplers.GPSampler(seed=0, n_startup_trials=2),
    lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=4),
    lambda: EvolutionSampler(seed=0, population_size=4),
], ids=["tpe", "tpe-group", "random", "cmaes", "gp", "nsga2", "evolution"])
@pytest.mark.parametrize("strategy", ["prior", "local"])
def test_prior_wraps_every_kind_of_sampler_over_a_conditional_space(url, storage, make, strategy):
    old = SearchSpace((cat("attention", "dense", "sparse"),
                       fl("keep_ratio", 0.1, 0.9, when=(("attention", ("sparse",)),)),
                       it("layers", 1, 8)))
    new = SearchSpace((cat("attention", "dense", "sparse"),
                       fl("keep_ratio", 0.2, 0.8, when=(("attention", ("sparse",)),)),
                       it("layers", 2, 6), fl("lr", 1e-4, 1e-2, log=True)))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        p = {"attention": "sparse" if i % 2 else "dense", "layers": int(rng.integers(1, 9))}
        if p["attention"] == "sparse":
            p["keep_ratio"] = float(rng.uniform(0.1, 0.9))
        rows.append((p, float(rng.uniform())))
    add_source(storage, "old", old, rows)
    spec = make_spec(url, new, strategy=strategy, **({"local_trials": 3} if strategy == "local" else {}))
    study, counts = new_study(url, storage, spec, make())
    assert counts == {"old": 12}
    study.optimize(lambda t: len(space.suggest(t, new)) + t.number * 0.01, n_trials=6)
    assert len(study.trials) == 6
    for t in study.trials:
        assert ("keep_ratio" in t.params) == (t.params["attention"] == "sparse")


@pytest.mark.parametrize("guarded", [False, True], ids=["bare", "behind-the-duplicate-guard"])
def test_nsga2_under_the_prior_breeds_from_the_own_trials_only(guarded):
    # GA samplers find a trial at the list position of its number and their parents by trial id;
    # source trials shown before the own ones (and fading out) took those places and became
    # parents, then vanished: an empty parent population once the sources had faded. A study's
    # sampler comes behind the duplicate guard (build_sampler), which the view must see through.
    sources = _trials([(i / 12, 1 - i / 12) for i in range(12)], bowl)
    for t in sources:
        t.number = -1
    nsga2 = optuna.samplers.NSGAIISampler(seed=0, population_size=4)
    inner = DistinctSampler(nsga2, seed=0) if guarded else nsga2
    study = optuna.create_study(sampler=PriorSampler(inner, sources, fade_trials=6))
    study.optimize(lambda t: bowl(space.suggest(t, SPACE)), n_trials=16)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 16
    own_ids = {trial_id_of(t) for t in study.trials}
    system_attrs = storage_of(study).get_study_system_attrs(study_id_of(study))
    parents = {k: v for k, v in system_attrs.items() if ":parent:" in k}
    assert parents and all(set(ids) <= own_ids for ids in parents.values())
    view = study.sampler._view(study)
    assert [t.number for t in view._get_trials(deepcopy=False, use_cache=True)] == list(range(16))


def test_evolution_under_the_prior_breeds_from_the_own_trials_only():
    # The view lists the source trials (numbered -1) beside the own ones; evolution's elite skips
    # them, so every child's parents are the study's own earlier trials.
    sources = _trials([(0.8 + i / 100, 0.2 - i / 100) for i in range(12)], bowl)   # near the optimum
    for t in sources:
        t.number = -1
    study = optuna.create_study(sampler=PriorSampler(EvolutionSampler(seed=0, population_size=4), sources,
                                                     fade_trials=1000))
    study.optimize(lambda t: bowl(space.suggest(t, SPACE)), n_trials=16)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 16
    view = study.sampler._view(study)
    assert -1 in [t.number for t in view._get_trials(deepcopy=False, use_cache=True)]
    bred = [t for t in study.trials if "EvolutionSampler:parents" in t.system_attrs]
    assert len(bred) >= 10
    assert all(0 <= n < t.number for t in bred for n in t.system_attrs["EvolutionSampler:parents"])


def test_prior_with_multi_objective_source(url, storage):
    sp = SearchSpace((fl("x", 0.0, 1.0),))
    add_source(storage, "old", sp, [({"x": i / 10}, (i, 10 - i)) for i in range(10)],
               directions=("minimize", "maximize"))
    study, counts = new_study(url, storage,
                              make_spec(url, sp, strategy="prior", directions=("minimize", "maximize")),
                              optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=4)
    assert counts == {"old": 10} and len(study.trials) == 4


def _trials(points, f):
    dists = space.distributions(SPACE)
    return [optuna.trial.create_trial(params={"x": x, "y": y}, distributions=dists, value=f({"x": x, "y": y}))
            for x, y in points]


def test_relevance_is_high_for_a_source_that_ranks_own_results_right_and_zero_otherwise():
    rng = np.random.default_rng(0)
    src_points = rng.uniform(size=(40, 2))
    own_points = rng.uniform(size=(12, 2))
    src = _trials(src_points, bowl)
    own = _trials(own_points, lambda p: bowl(p) * 3 + 1)                     # same problem, rescaled
    opposite = _trials(own_points, lambda p: -bowl(p))                      # best where source is worst
    assert relevance(src, own[:2]) == 1.0                                   # too few to judge
    assert relevance(src, own) > 0.6
    assert relevance(src, opposite) == 0.0


def test_an_unrelated_source_stops_being_shown_once_own_results_contradict_it():
    rng = np.random.default_rng(1)
    src = _trials(rng.uniform(size=(40, 2)), bowl)
    own = _trials(rng.uniform(size=(6, 2)), lambda p: -bowl(p))
    prior = warmstart.PriorSampler(optuna.samplers.RandomSampler(), src, fade_trials=1000)
    assert len(prior.visible_sources(own[:2])) == 40
    assert prior.visible_sources(own) == []
