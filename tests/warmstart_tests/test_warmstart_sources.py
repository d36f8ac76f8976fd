"""Which studies a warm start reads, and the errors and warnings for bad references."""
from __future__ import annotations

import logging

import optuna
import pytest

from autotune import store, warmstart
from autotune.spec_types import SearchSpace
from autotune.warmstart import WarmStartError

from .helpers import add_source, cat, fl, it, make_spec

SPACE = SearchSpace((fl("lr", 1e-4, 1e-2, log=True), it("layers", 1, 8), cat("act", "gelu", "silu")))
ROW = ({"lr": 1e-3, "layers": 4, "act": "gelu"}, 1.0)


def test_missing_source_names_it_and_lists_the_available_studies(url, storage):
    add_source(storage, "moe-small-v0", SPACE, [ROW])
    add_source(storage, "moe-small-v1", SPACE, [ROW])
    with pytest.raises(WarmStartError) as err:
        warmstart.prepare(make_spec(url, SPACE, sources=("moe-smal-v0",)), storage, None)
    msg = str(err.value)
    assert "'moe-smal-v0'" in msg and "moe-small-v0, moe-small-v1" in msg


def test_missing_source_in_an_empty_store_says_there_are_none(url, storage):
    with pytest.raises(WarmStartError, match="available studies: none"):
        warmstart.prepare(make_spec(url, SPACE, sources=("old",)), storage, None)


def test_missing_source_in_another_storage_names_that_storage(tmp_path, url, storage):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    store.open_storage(other)
    with pytest.raises(WarmStartError, match=r"no study named 'old' in sqlite:///.*other\.db"):
        warmstart.prepare(make_spec(url, SPACE, storage=other), storage, None)


def test_a_source_database_file_that_does_not_exist_is_an_error_and_is_not_created(tmp_path, url,
                                                                                   storage):
    missing = tmp_path / "archive.db"
    with pytest.raises(WarmStartError, match=r"warm_start.storage: .*no such file"):
        warmstart.prepare(make_spec(url, SPACE, storage=f"sqlite:///{missing}"), storage, None)
    assert not missing.exists()


def test_a_space_with_nothing_in_common_is_an_error_naming_both_spaces(url, storage):
    add_source(storage, "old", SearchSpace((fl("momentum", 0.0, 1.0),)), [({"momentum": 0.9}, 1.0)])
    with pytest.raises(WarmStartError, match=r"nothing in common.*\['momentum'\].*'layers'"):
        warmstart.prepare(make_spec(url, SPACE), storage, None)


def test_partial_overlap_is_a_warning_naming_new_and_ignored_parameters(url, storage, caplog):
    old = SearchSpace((fl("lr", 1e-4, 1e-2, log=True), fl("momentum", 0.0, 1.0)))
    add_source(storage, "old", old, [({"lr": 1e-3, "momentum": 0.9}, 1.0)])
    with caplog.at_level(logging.WARNING, logger="autotune"):
        _, apply = warmstart.prepare(make_spec(url, SPACE), storage, None)
    assert "['act', 'layers']" in caplog.text and "['momentum']" in caplog.text
    study = store.create_or_load_study(storage, "new", ["minimize"])
    assert apply(study) == {"old": 1}


def test_a_study_cannot_warm_start_from_itself(url, storage):
    add_source(storage, "new", SPACE, [ROW])
    with pytest.raises(WarmStartError, match="from itself"):
        warmstart.prepare(make_spec(url, SPACE, sources=("new",)), storage, None)


def test_directions_that_differ_are_an_error(url, storage):
    add_source(storage, "old", SPACE, [ROW], directions=("maximize",))
    with pytest.raises(WarmStartError, match=r"directions \['maximize'\].*\['minimize'\]"):
        warmstart.prepare(make_spec(url, SPACE), storage, None)
    add_source(storage, "two", SPACE, [(ROW[0], (1.0, 2.0))], directions=("minimize", "minimize"))
    with pytest.raises(WarmStartError, match="same objectives"):
        warmstart.prepare(make_spec(url, SPACE, sources=("two",)), storage, None)


def test_unknown_strategy_is_an_error(url, storage):
    with pytest.raises(WarmStartError, match="enqueue, prior"):
        warmstart.prepare(make_spec(url, SPACE, strategy="transfer"), storage, None)


def test_auto_picks_the_studies_whose_space_overlaps_most(url, storage):
    add_source(storage, "same", SPACE, [ROW])
    add_source(storage, "most", SearchSpace(SPACE.params[:2] + (fl("wd", 0.0, 0.1),)),
               [({"lr": 1e-3, "layers": 2, "wd": 0.01}, 1.0)])
    add_source(storage, "unrelated", SearchSpace((fl("momentum", 0.0, 1.0),)),
               [({"momentum": 0.5}, 1.0)])
    add_source(storage, "other-direction", SPACE, [ROW], directions=("maximize",))
    optuna.create_study(storage=storage, study_name="empty")
    add_source(storage, "new", SPACE, [ROW])           # this study itself, resumed
    _, apply = warmstart.prepare(make_spec(url, SPACE, sources=("auto",)), storage, None)
    study = store.create_or_load_study(storage, "new", ["minimize"])
    assert apply(study) == {"same": 1, "most": 1}
    assert list(study.user_attrs["warm_start"]["sources"]) == ["same", "most"]


def test_auto_with_no_related_study_starts_cold(url, storage):
    add_source(storage, "unrelated", SearchSpace((fl("momentum", 0.0, 1.0),)), [({"momentum": 0.5}, 1.0)])
    _, apply = warmstart.prepare(make_spec(url, SPACE, sources=("auto",)), storage, None)
    study = store.create_or_load_study(storage, "new", ["minimize"])
    assert apply(study) == {} and study.trials == []


def test_source_with_no_finished_trials_transfers_nothing_with_a_warning(url, storage, caplog):
    optuna.create_study(storage=storage, study_name="old")
    with caplog.at_level(logging.WARNING, logger="autotune"):
        _, apply = warmstart.prepare(make_spec(url, SPACE), storage, None)
    assert "no finished trial" in caplog.text
    assert apply(store.create_or_load_study(storage, "new", ["minimize"])) == {"old": 0}


def test_storage_may_be_given_as_a_url(url, storage):
    add_source(storage, "old", SPACE, [ROW])
    _, apply = warmstart.prepare(make_spec(url, SPACE), url, None)
    assert apply(store.create_or_load_study(storage, "new", ["minimize"])) == {"old": 1}


def test_auto_in_another_storage_may_pick_a_study_of_the_same_name(tmp_path, url, storage):
    archive = f"sqlite:///{tmp_path / 'archive.db'}"
    add_source(store.open_storage(archive), "new", SPACE, [ROW])     # last year's run of this study
    _, apply = warmstart.prepare(make_spec(url, SPACE, sources=("auto",), storage=archive), storage, None)
    assert apply(store.create_or_load_study(storage, "new", ["minimize"])) == {"new": 1}


def test_prior_from_another_storage_reads_it_and_writes_nothing_there(tmp_path, url, storage):
    archive = f"sqlite:///{tmp_path / 'archive.db'}"
    add_source(store.open_storage(archive), "old", SPACE, [ROW, ({"lr": 2e-3, "layers": 2, "act": "silu"}, 2.0)])
    sampler, apply = warmstart.prepare(make_spec(url, SPACE, strategy="prior", storage=archive),
                                       storage, optuna.samplers.TPESampler(seed=0))
    study = store.create_or_load_study(storage, "new", ["minimize"], sampler=sampler)
    assert apply(study) == {"old": 2}
    study.optimize(lambda t: t.suggest_int("layers", 1, 8) * 1.0, n_trials=2)
    assert len(study.trials) == 2
    assert [s.study_name for s in optuna.get_all_study_summaries(store.open_storage(archive))] == ["old"]
    assert study.user_attrs["warm_start"] == {"strategy": "prior", "sources": {"old": 2},
                                              "out_of_range": "clip", "storage": archive}
