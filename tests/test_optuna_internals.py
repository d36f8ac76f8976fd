"""What autotune relies on of Optuna's internals (``autotune._optuna``, and ``optuna._gp`` in the
hybrid sampler), pinned against Optuna's public API: an Optuna release that changes one breaks
this file, loudly, naming it."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autotune import _optuna, space, store

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study(tmp_path):
    storage = store.open_storage(f"sqlite:///{tmp_path / 'internals.db'}")
    optuna.create_study(study_name="other", storage=storage)   # ids differ from numbers
    study = optuna.create_study(study_name="pinned", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    return optuna.load_study(study_name="pinned", storage=storage)


def test_study_id_of_is_the_id_the_storage_gives_its_name(study):
    storage = _optuna.storage_of(study)
    assert _optuna.study_id_of(study) == storage.get_study_id_from_name("pinned")
    frozen = [s for s in storage.get_all_studies() if s.study_name == "pinned"][0]
    assert _optuna.study_id_of(frozen) == storage.get_study_id_from_name("pinned")


def test_trial_id_of_a_live_or_frozen_trial_is_the_storages_id(study):
    storage = _optuna.storage_of(study)
    sid = _optuna.study_id_of(study)
    for frozen in study.get_trials():
        expected = storage.get_trial_id_from_study_id_trial_number(sid, frozen.number)
        assert _optuna.trial_id_of(frozen) == expected
        assert _optuna.trial_id_of(optuna.trial.Trial(study, expected)) == expected
    live = study.ask()
    assert storage.get_trial(_optuna.trial_id_of(live)).number == live.number


def test_set_trial_id_gives_a_created_trial_the_id():
    trial = optuna.trial.create_trial(value=1.0)
    _optuna.set_trial_id(trial, -1)
    assert _optuna.trial_id_of(trial) == -1


def test_storage_of_and_the_backend_behind_its_cache(study):
    backend = _optuna.backend_storage(study)
    assert isinstance(backend, store.RetryingRDBStorage)   # past load_study's cache
    assert _optuna.storage_of(study).get_all_trials(_optuna.study_id_of(study)) == \
        backend.get_all_trials(_optuna.study_id_of(study))


def test_study_trials_cached_is_get_trials_and_the_cache_holds_within_a_trial(study):
    complete = (TrialState.COMPLETE,)
    assert _optuna.study_trials_cached(study, complete, use_cache=False) == \
        study.get_trials(deepcopy=False, states=complete)
    cached = _optuna.study_trials_cached(study, use_cache=True)
    study.enqueue_trial({"x": 0.5})                     # not seen until the cache is dropped
    assert _optuna.study_trials_cached(study, use_cache=True) == cached
    assert len(_optuna.study_trials_cached(study, use_cache=False)) == len(cached) + 1


def test_optunas_samplers_read_trials_through_the_hook_that_views_override(study):
    seen = []

    class View(optuna.Study):
        def _get_trials(self, deepcopy=True, states=None, use_cache=False):  # the TRIALS_HOOK
            seen.append(use_cache)
            return super()._get_trials(deepcopy, states, use_cache)

    assert hasattr(optuna.Study, _optuna.TRIALS_HOOK) and View._get_trials.__name__ == _optuna.TRIALS_HOOK
    view = View(study_name="pinned", storage=_optuna.storage_of(study),
                sampler=optuna.samplers.TPESampler(n_startup_trials=1, seed=0))
    view.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert seen   # TPE asked the view, not the storage


@pytest.mark.parametrize("dist,inside,outside", [
    (FloatDistribution(0.0, 1.0), 0.5, 1.5),
    (FloatDistribution(0.0, 1.0, step=0.25), 0.75, 0.3),
    (IntDistribution(1, 9, step=2), 3, 4),
    (CategoricalDistribution(["a", "b"]), "b", "c"),
])
def test_contains_tells_members_from_values_outside_the_distribution(dist, inside, outside):
    assert _optuna.contains(dist, inside)
    assert not _optuna.contains(dist, outside)


def test_hypervolume_of_two_points():
    points = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert _optuna.hypervolume(points, np.array([3.0, 3.0])) == pytest.approx(3.0)


def test_the_queries_find_optunas_tables_and_count_as_the_api_does(study):
    storage = _optuna.backend_storage(study)
    assert _optuna.missing_optuna_tables(storage.engine)[0] == []
    study.enqueue_trial({"x": 0.1})
    asked = study.ask()
    asked.set_user_attr("n", 7)
    counts = _optuna.count_trials(storage, _optuna.study_id_of(study))
    by_state = {s: len(study.get_trials(states=(s,))) for s in TrialState}
    assert (counts.complete, counts.waiting) == (by_state[TrialState.COMPLETE], by_state[TrialState.WAITING])
    assert counts.running + counts.running_without_heartbeat == by_state[TrialState.RUNNING] == 1
    assert _optuna.trial_user_attr_json(storage, _optuna.study_id_of(study), "n") == [7]


def test_the_storage_methods_that_the_store_retries_exist_on_rdb_storage():
    for name in ("_get_trials", "_get_best_trial_id", "_get_stale_trial_ids", "_set_trial_param"):
        assert callable(getattr(optuna.storages.RDBStorage, name)), name


# --- optuna._gp, which the hybrid sampler uses ---------------------------------------------------

def test_the_gp_names_the_hybrid_sampler_imports_exist():
    from optuna._gp import acqf, gp, optim_mixed, prior, search_space
    from optuna._gp.thread_limiting import limit_threads_in_optimization  # noqa: F401
    assert callable(acqf.LogEI) and callable(acqf.logei) and callable(gp.fit_kernel_params)
    assert callable(gp.GPRegressor._cache_matrix) and callable(gp.warn_and_convert_inf)
    assert callable(optim_mixed.local_search_mixed_batched) and callable(search_space.SearchSpace)
    assert prior.default_log_prior is not None and prior.DEFAULT_MINIMUM_NOISE_VAR > 0


def test_space_to_unit_scales_as_the_gp_search_space_normalizes():
    """The hybrid sampler hands its unit matrix to Optuna's local search ("same gene order and
    scaling"): the numeric scaling must match, and categoricals go as choice indices."""
    from optuna._gp.search_space import SearchSpace
    dists = {"f": FloatDistribution(-1.0, 3.0), "lg": FloatDistribution(1e-4, 1e-1, log=True),
             "st": FloatDistribution(0.1, 0.9, step=0.2), "i": IntDistribution(2, 9),
             "il": IntDistribution(1, 512, log=True), "c": CategoricalDistribution(["a", "b", "c"])}
    rng = np.random.default_rng(0)
    params = [{n: space.from_unit(d, u) for (n, d), u in zip(dists.items(), rng.uniform(size=6))}
              for _ in range(50)]
    trials = [optuna.trial.create_trial(params=p, distributions=dists, value=0.0) for p in params]
    theirs = SearchSpace(dists).get_normalized_params(trials)
    for j, (name, dist) in enumerate(dists.items()):
        if isinstance(dist, CategoricalDistribution):
            ours = [space.choice_index(dist.choices, p[name]) for p in params]
        else:
            ours = [space.to_unit(dist, p[name]) for p in params]
        np.testing.assert_allclose(theirs[:, j], ours, atol=1e-9, err_msg=name)
        back = [SearchSpace(dists).get_unnormalized_param(row)[name] for row in theirs[:5]]
        assert back == [p[name] for p in params[:5]], name
