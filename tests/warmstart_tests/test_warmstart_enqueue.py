"""The ``enqueue`` strategy: the best earlier configurations are evaluated first, once."""
from __future__ import annotations

import re

import optuna

from autotune import store, warmstart
from autotune.spec_types import SearchSpace

from .helpers import add_source, cat, fl, it, make_spec

OLD = SearchSpace((fl("x", -10.0, 10.0), it("n", 1, 100), cat("act", "relu", "gelu")))
NEW = SearchSpace((fl("x", -1.0, 1.0), it("n", 1, 100), cat("act", "gelu", "silu"), fl("y", 0.0, 1.0)))
ROWS = [({"x": 0.5, "n": 10, "act": "gelu"}, 3.0),
        ({"x": 5.0, "n": 20, "act": "relu"}, 1.0),      # best: x clipped to 1.0, act dropped
        ({"x": -0.2, "n": 30, "act": "gelu"}, 2.0),
        ({"x": 0.0, "n": 40, "act": "gelu"}, 9.0)]


def run_new(url, storage, spec, n_trials=0, seed=0):
    sampler, apply = warmstart.prepare(spec, storage, optuna.samplers.TPESampler(seed=seed))
    study = store.create_or_load_study(storage, spec.study, spec.directions, sampler=sampler)
    counts = apply(study)
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2 + t.suggest_float("y", 0, 1)
                   + t.suggest_int("n", 1, 100) + len(t.suggest_categorical("act", ["gelu", "silu"])),
                   n_trials=n_trials)
    return study, counts


def test_best_top_k_configurations_are_enqueued_first_in_order_and_marked(url, storage):
    add_source(storage, "old", OLD, ROWS)
    study, counts = run_new(url, storage, make_spec(url, NEW, best_k=3), n_trials=4)
    assert counts == {"old": 3}
    first = study.trials[:3]
    assert [t.params["n"] for t in first] == [20, 30, 10]
    assert first[0].params["x"] == 1.0                              # clipped
    assert first[0].params["act"] in ("gelu", "silu")               # dropped choice: sampled afresh
    assert all(0.0 <= t.params["y"] <= 1.0 for t in first)          # new param: sampled
    assert [t.user_attrs.get("warm_start_from") for t in study.trials] == ["old"] * 3 + [None]


def test_provenance_is_recorded_in_the_study_user_attrs(url, storage):
    add_source(storage, "old", OLD, ROWS)
    study, _ = run_new(url, storage, make_spec(url, NEW, best_k=2))
    assert study.user_attrs["warm_start"] == {"strategy": "enqueue", "sources": {"old": 2},
                                              "out_of_range": "clip"}


def test_resuming_the_study_enqueues_nothing_again(url, storage):
    add_source(storage, "old", OLD, ROWS)
    spec = make_spec(url, NEW, best_k=2)
    run_new(url, storage, spec, n_trials=1)          # interrupted after one of the two
    study, counts = run_new(url, storage, spec, n_trials=3)
    assert counts == {"old": 2}
    assert sum(t.user_attrs.get("warm_start_from") == "old" for t in study.trials) == 2
    assert len(study.trials) == 4
    assert study.user_attrs["warm_start"]["sources"] == {"old": 2}


def test_drop_mode_skips_values_out_of_range_and_duplicates_are_enqueued_once(url, storage):
    rows = [({"x": 5.0}, 1.0), ({"x": 7.0}, 2.0), ({"x": 0.3}, 3.0)]
    add_source(storage, "old", SearchSpace((fl("x", -10.0, 10.0),)), rows)
    new = SearchSpace((fl("x", -1.0, 1.0),))
    _, clip = warmstart.prepare(make_spec(url, new, study="clip", best_k=3), storage, None)
    study = store.create_or_load_study(storage, "clip", ["minimize"])
    assert clip(study) == {"old": 2}                 # 5.0 and 7.0 both clip to 1.0
    assert [t.system_attrs["fixed_params"] for t in study.trials] == [{"x": 1.0}, {"x": 0.3}]
    _, drop = warmstart.prepare(make_spec(url, new, study="drop", best_k=3, out_of_range="drop"),
                                storage, None)
    study = store.create_or_load_study(storage, "drop", ["minimize"])
    assert drop(study) == {"old": 1}
    assert [t.system_attrs["fixed_params"] for t in study.trials] == [{"x": 0.3}]


def test_maximize_source_enqueues_the_highest_values(url, storage):
    add_source(storage, "old", OLD, ROWS, directions=("maximize",))
    _, apply = warmstart.prepare(make_spec(url, NEW, best_k=1, directions=("maximize",)), storage, None)
    study = store.create_or_load_study(storage, "new", ["maximize"])
    apply(study)
    assert study.trials[0].system_attrs["fixed_params"]["n"] == 40


def test_multi_objective_sources_enqueue_the_pareto_front_first(url, storage):
    rows = [({"x": 0.1}, (1.0, 5.0)), ({"x": 0.2}, (2.0, 6.0)),     # dominated by the first
            ({"x": 0.3}, (3.0, 1.0)), ({"x": 0.4}, (4.0, 4.0))]
    sp = SearchSpace((fl("x", 0.0, 1.0),))
    add_source(storage, "old", sp, rows, directions=("minimize", "minimize"))
    _, apply = warmstart.prepare(make_spec(url, sp, best_k=2, directions=("minimize", "minimize")),
                                 storage, None)
    study = store.create_or_load_study(storage, "new", ["minimize", "minimize"])
    apply(study)
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in study.trials) == [0.1, 0.3]


def test_source_in_another_storage_url_is_read_and_left_unchanged(tmp_path, url, storage):
    other_url = f"sqlite:///{tmp_path / 'archive.db'}"
    old = add_source(store.open_storage(other_url), "old", OLD, ROWS)
    before = [(t.number, t.params, t.values, t.user_attrs) for t in old.trials]
    study, counts = run_new(url, storage, make_spec(url, NEW, best_k=2, storage=other_url), n_trials=2)
    assert counts == {"old": 2}
    assert [t.params["n"] for t in study.trials] == [20, 30]
    assert study.user_attrs["warm_start"]["storage"] == other_url
    reread = optuna.load_study(study_name="old", storage=store.open_storage(other_url))
    assert [(t.number, t.params, t.values, t.user_attrs) for t in reread.trials] == before
    assert reread.user_attrs == {}
    assert not store.study_exists(store.open_storage(other_url), "new")


def test_several_sources_each_give_their_best(url, storage):
    add_source(storage, "a", OLD, ROWS)
    add_source(storage, "b", OLD, [({"x": 0.9, "n": 77, "act": "gelu"}, 0.5)])
    _, apply = warmstart.prepare(make_spec(url, NEW, sources=("a", "b"), best_k=2), storage, None)
    study = store.create_or_load_study(storage, "new", ["minimize"])
    assert apply(study) == {"a": 2, "b": 1}
    assert [t.user_attrs["warm_start_from"] for t in study.trials] == ["a", "a", "b"]


def test_no_warm_start_is_a_no_op(url, storage):
    spec = make_spec(url, NEW, sources=())
    sampler = optuna.samplers.RandomSampler()
    got, apply = warmstart.prepare(spec, storage, sampler)
    study = store.create_or_load_study(storage, "new", ["minimize"])
    assert got is sampler and apply(study) == {} and study.user_attrs == {}


def test_the_report_counts_the_enqueued_trials_under_their_source(url, storage, tmp_path):
    from autotune import report
    add_source(storage, "old", OLD, ROWS)
    study, _ = run_new(url, storage, make_spec(url, NEW, best_k=2), n_trials=3)
    page = report.write_report(study, tmp_path / "r.html").read_text()
    warm = page.split('id="warm-start"')[1].split("</section>")[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", warm)
    assert cells[:4] == ["old", "2", "2", "2"]     # taken, here, complete
