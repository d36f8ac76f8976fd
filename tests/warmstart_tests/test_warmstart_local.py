"""The ``local`` strategy: the sources' best first, a local search around the best so far, then the prior."""
from __future__ import annotations

import numpy as np
import optuna
import pytest

from autotune import space, store, warmstart
from autotune.warmstart._local import perturb
from autotune.spec_types import SearchSpace

from .helpers import add_source, cat, fl, it, make_spec

SPACE = SearchSpace((fl("x", 0.0, 1.0), fl("y", 0.0, 1.0)))


def bowl(p, center=(0.8, 0.2)):
    return (p["x"] - center[0]) ** 2 + (p["y"] - center[1]) ** 2


def add_bowl_source(storage, n=60, seed=0, name="old", center=(0.8, 0.2), directions=("minimize",),
                    sign=1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for x, y in rng.uniform(size=(n, 2)):
        p = {"x": float(x), "y": float(y)}
        rows.append((p, sign * bowl(p, center)))
    return add_source(storage, name, SPACE, rows, directions=directions)


class Spy(optuna.samplers.RandomSampler):
    """A random sampler that records the trial numbers it chose parameters for."""

    def __init__(self, seed=0):
        super().__init__(seed=seed)
        self.asked: set[int] = set()

    def sample_independent(self, study, trial, name, dist):
        self.asked.add(trial.number)
        return super().sample_independent(study, trial, name, dist)


def new_study(url, storage, inner, **warm):
    spec = make_spec(url, SPACE, strategy="local", **warm)
    sampler, apply = warmstart.prepare(spec, storage, inner)
    study = store.create_or_load_study(storage, spec.study, spec.directions, sampler=sampler)
    return study, apply(study)


def test_the_first_trial_is_the_sources_best_and_the_next_stay_near_the_best_so_far(url, storage):
    old = add_bowl_source(storage)
    study, counts = new_study(url, storage, Spy(), local_trials=10)
    assert counts == {"old": 60}
    target = (0.75, 0.25)          # the optimum moved a little
    study.optimize(lambda t: bowl(space.suggest(t, SPACE), target), n_trials=10)
    assert study.trials[0].params == old.best_trial.params
    for t in study.trials[1:]:
        before = [p for p in study.trials[:t.number] if p.value is not None]
        incumbent = min(before, key=lambda p: p.value)
        assert abs(t.params["x"] - incumbent.params["x"]) < 0.25
        assert abs(t.params["y"] - incumbent.params["y"]) < 0.25
    assert study.best_value < study.trials[0].value             # it moved towards the new optimum
    assert study.user_attrs["warm_start"] == {"strategy": "local", "sources": {"old": 60},
                                              "out_of_range": "clip", "local_trials": 10}


def test_after_local_trials_the_inner_sampler_decides_once_the_search_stops_improving(url, storage):
    add_bowl_source(storage)
    spy = Spy()
    study, _ = new_study(url, storage, spy, local_trials=4)
    study.optimize(lambda t: 1.0 + 0 * bowl(space.suggest(t, SPACE)), n_trials=14)
    assert spy.asked == {11, 12, 13}      # trial 0 stays the best: 10 more trials, then the sampler
    assert isinstance(study.sampler, warmstart.PriorSampler)     # and sees the sources after


def test_a_local_search_that_keeps_improving_goes_on_up_to_three_times_local_trials(url, storage):
    rng = np.random.default_rng(0)               # a flat source: it ranks every result alike
    add_source(storage, "old", SPACE, [({"x": float(x), "y": float(y)}, 0.0)
                                       for x, y in rng.uniform(size=(20, 2))])
    spy = Spy()
    study, _ = new_study(url, storage, spy, local_trials=4)
    study.optimize(lambda t: -t.number + 0 * bowl(space.suggest(t, SPACE)), n_trials=16)
    assert spy.asked == {12, 13, 14, 15}


def test_trials_asked_together_at_the_start_are_not_all_the_same(url, storage):
    add_bowl_source(storage)
    study, _ = new_study(url, storage, Spy())
    trials = [study.ask() for _ in range(3)]                     # three workers, nothing finished
    params = [space.suggest(t, SPACE) for t in trials]
    best = min(optuna.load_study(study_name="old", storage=storage).trials, key=lambda t: t.value)
    assert params[0] == best.params
    assert params[1] != params[0] and params[2] != params[0] and params[1] != params[2]


def test_an_unrelated_source_ends_the_local_search_early(url, storage):
    add_bowl_source(storage)
    spy = Spy()
    study, _ = new_study(url, storage, spy, local_trials=15)
    rng = np.random.default_rng(3)
    for x, y in rng.uniform(size=(6, 2)):      # own results: best where the source is worst
        study.enqueue_trial({"x": float(x), "y": float(y)})
    study.optimize(lambda t: -bowl(space.suggest(t, SPACE)), n_trials=9)
    assert {6, 7, 8} <= spy.asked


def test_a_maximized_source_starts_from_its_highest_value(url, storage):
    old = add_bowl_source(storage, directions=("maximize",), sign=-1.0)
    spec = make_spec(url, SPACE, strategy="local", directions=("maximize",))
    sampler, apply = warmstart.prepare(spec, storage, Spy())
    study = store.create_or_load_study(storage, "new", ["maximize"], sampler=sampler)
    apply(study)
    study.optimize(lambda t: -bowl(space.suggest(t, SPACE)), n_trials=1)
    assert study.trials[0].params == old.best_trial.params


def test_a_local_warm_start_needs_a_single_objective(url, storage):
    add_source(storage, "old", SPACE, [({"x": 0.1, "y": 0.2}, (1.0, 2.0))],
               directions=("minimize", "minimize"))
    with pytest.raises(warmstart.WarmStartError, match="single objective"):
        warmstart.prepare(make_spec(url, SPACE, strategy="local", directions=("minimize", "minimize")),
                          storage, None)


@pytest.mark.parametrize("param,value", [
    (it("layers", 2, 8, step=2), 4),                 # 4 levels: a plain small step would never move
    (it("experts", 1, 64, log=True), 8),
    (fl("ratio", 0.1, 0.9, step=0.1), 0.5),
    (cat("act", "gelu", "silu", "relu"), "silu"),
])
def test_perturb_stays_in_the_space_and_moves_a_discrete_value_sometimes(param, value):
    dist = space.distributions(SearchSpace((param,)))[param.name]
    rng = np.random.RandomState(0)
    got = [perturb(dist, value, 0.05, rng) for _ in range(200)]
    assert all(dist._contains(dist.to_internal_repr(v)) for v in got)
    moved = sum(v != value for v in got) / len(got)
    assert 0.1 < moved < 0.95


def test_perturb_takes_steps_of_the_given_share_of_the_range():
    dist = space.distributions(SearchSpace((fl("x", 0.0, 1.0),)))["x"]
    rng = np.random.RandomState(0)
    got = np.asarray([perturb(dist, 0.5, 0.02, rng) for _ in range(500)])
    assert 0.015 < np.std(got) < 0.025


def test_perturb_steps_on_the_log_scale_of_a_log_parameter():
    dist = space.distributions(SearchSpace((fl("lr", 1e-5, 1e-1, log=True),)))["lr"]
    rng = np.random.RandomState(0)
    got = np.log10([perturb(dist, 1e-3, 0.05, rng) for _ in range(500)])
    assert np.all((got >= -5) & (got <= -1))
    assert 0.15 < np.std(got) < 0.25           # 0.05 of 4 decades


def test_a_conditional_parameter_the_incumbent_lacks_comes_from_the_inner_sampler(url, storage):
    sp = SearchSpace((cat("attention", "dense", "sparse"),
                      fl("keep_ratio", 0.2, 0.8, when=(("attention", ("sparse",)),))))
    add_source(storage, "old", sp, [({"attention": "dense"}, 0.5),
                                    ({"attention": "sparse", "keep_ratio": 0.4}, 1.0),
                                    ({"attention": "sparse", "keep_ratio": 0.6}, 2.0)])
    spy = Spy()
    sampler, apply = warmstart.prepare(make_spec(url, sp, strategy="local"), storage, spy)
    study = store.create_or_load_study(storage, "new", ["minimize"], sampler=sampler)
    apply(study)
    study.optimize(lambda t: len(space.suggest(t, sp)), n_trials=12)
    for t in study.trials:
        assert ("keep_ratio" in t.params) == (t.params["attention"] == "sparse")
    assert study.trials[0].params == {"attention": "dense"}
    assert any("keep_ratio" in t.params for t in study.trials)   # the choice changed sometimes


MIXED = SearchSpace((fl("lr", 1e-4, 1e-1, log=True), it("layers", 2, 12, step=2),
                     cat("act", "gelu", "silu", "relu")))


def mixed_loss(p, layers=8):
    return (np.log10(p["lr"]) + 2.5) ** 2 + ((p["layers"] - layers) / 4) ** 2 + (p["act"] != "gelu")


def add_mixed_source(storage, n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        p = {"lr": float(10 ** rng.uniform(-4, -1)), "layers": int(rng.choice([2, 4, 6, 8, 10, 12])),
             "act": str(rng.choice(["gelu", "silu", "relu"]))}
        rows.append((p, mixed_loss(p, layers=6)))
    return add_source(storage, "old", MIXED, rows)


def mixed_study(url, storage, local_trials=15):
    spec = make_spec(url, MIXED, strategy="local", local_trials=local_trials)
    sampler, apply = warmstart.prepare(spec, storage, Spy())
    study = store.create_or_load_study(storage, spec.study, spec.directions, sampler=sampler)
    apply(study)
    return study


def test_a_local_step_changes_the_continuous_values_or_one_discrete_value_never_both(url, storage):
    add_mixed_source(storage)
    study = mixed_study(url, storage)
    study.optimize(lambda t: mixed_loss(space.suggest(t, MIXED)), n_trials=15)
    discrete_moves = 0
    local = [t for t in study.trials[1:] if study.sampler.is_local(t)]
    assert len(local) >= 8
    for t in local:
        incumbent = min(study.trials[:t.number], key=lambda p: p.value).params
        changed = {n for n in ("layers", "act") if t.params[n] != incumbent[n]}
        assert len(changed) <= 1
        if changed:
            discrete_moves += 1
            assert t.params["lr"] == incumbent["lr"]
    assert 0 < discrete_moves < len(local)


def test_no_discrete_neighbour_of_the_incumbent_is_tried_twice(url, storage):
    sp = SearchSpace((it("layers", 2, 12, step=2), cat("act", "gelu", "silu", "relu")))
    add_source(storage, "old", sp, [({"layers": 6, "act": "gelu"}, 0.0),
                                    ({"layers": 4, "act": "silu"}, 1.0),
                                    ({"layers": 10, "act": "relu"}, 2.0)])
    sampler, apply = warmstart.prepare(make_spec(url, sp, strategy="local"), storage, Spy())
    study = store.create_or_load_study(storage, "new", ["minimize"], sampler=sampler)
    apply(study)
    study.optimize(lambda t: len(space.suggest(t, sp)), n_trials=5)   # all equal: the first stays best
    tried = [(t.params["layers"], t.params["act"]) for t in study.trials]
    assert tried[0] == (6, "gelu")
    assert sorted(tried[1:]) == [(4, "gelu"), (6, "relu"), (6, "silu"), (8, "gelu")]


def test_trials_asked_together_try_different_discrete_neighbours(url, storage):
    sp = SearchSpace((it("layers", 2, 12, step=2), cat("act", "gelu", "silu", "relu")))
    add_source(storage, "old", sp, [({"layers": 6, "act": "gelu"}, 0.0),
                                    ({"layers": 4, "act": "silu"}, 1.0)])
    sampler, apply = warmstart.prepare(make_spec(url, sp, strategy="local"), storage, Spy())
    study = store.create_or_load_study(storage, "new", ["minimize"], sampler=sampler)
    apply(study)
    study.optimize(lambda t: len(space.suggest(t, sp)), n_trials=1)
    trials = [study.ask() for _ in range(4)]                     # four workers, one result in
    params = [tuple(space.suggest(t, sp).values()) for t in trials]
    assert len(set(params)) == 4 and (6, "gelu") not in params
