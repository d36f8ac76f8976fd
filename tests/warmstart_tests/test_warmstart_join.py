"""A process that joins a warm-started study (``autotune worker``) samples as the one that started it."""
from __future__ import annotations

import dataclasses
import logging
import uuid

import numpy as np
import optuna
import pytest
import yaml
from click.testing import CliRunner

from autotune import store, warmstart
from autotune import study as study_mod
from autotune.cli import main
from autotune.spec import load_spec
from autotune.spec_types import SearchSpace

from .helpers import add_source, fl, make_spec

SPACE = SearchSpace((fl("x", 0.0, 1.0), fl("y", 0.0, 1.0)))


def add_old(storage, n=30, name="old"):
    rng = np.random.default_rng(0)
    rows = [({"x": float(x), "y": float(y)}, float((x - 0.3) ** 2 + y))
            for x, y in rng.uniform(size=(n, 2))]
    return add_source(storage, name, SPACE, rows)


def start(url, storage, spec):
    """What ``autotune run`` does: prepare, create the study, apply."""
    sampler, apply = warmstart.prepare(spec, storage, optuna.samplers.TPESampler(seed=0))
    study = store.create_or_load_study(storage, spec.study, spec.directions, sampler=sampler)
    apply(study)
    return study


def snapshot(storage, name="new"):
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state, t.params) for t in study.trials], study.user_attrs


def without_warm_start(spec):
    return dataclasses.replace(spec, warm_start=None)


@pytest.mark.parametrize("strategy,kind", [("prior", warmstart.PriorSampler),
                                           ("local", warmstart.LocalSearchSampler)])
def test_a_worker_without_warm_start_in_its_file_rebuilds_the_sampler_from_the_record(
        url, storage, strategy, kind):
    add_old(storage)
    spec = make_spec(url, SPACE, strategy=strategy, local_trials=7) if strategy == "local" else \
        make_spec(url, SPACE, strategy=strategy)
    start(url, storage, spec)
    before = snapshot(storage)
    inner = optuna.samplers.TPESampler(seed=1)
    got = warmstart.prepare_join(without_warm_start(spec), storage, inner)
    assert type(got) is kind and got.inner is inner
    assert len(got.source_trials) == 30
    assert {t.user_attrs["warm_start_from"] for t in got.source_trials} == {"old"}
    if strategy == "local":
        assert got.local_trials == 7
    assert snapshot(storage) == before                       # nothing written


def test_an_enqueue_study_is_joined_without_enqueueing_again(url, storage):
    add_old(storage)
    spec = make_spec(url, SPACE, best_k=3)
    start(url, storage, spec)
    before = snapshot(storage)
    assert len(before[0]) == 3
    inner = optuna.samplers.RandomSampler()
    assert warmstart.prepare_join(spec, storage, inner) is inner
    assert snapshot(storage) == before


def test_a_study_without_warm_start_is_joined_with_the_plain_sampler(url, storage):
    optuna.create_study(storage=storage, study_name="new")
    inner = optuna.samplers.RandomSampler()
    assert warmstart.prepare_join(without_warm_start(make_spec(url, SPACE)), storage, inner) is inner


def test_without_a_record_the_workers_own_warm_start_is_used(url, storage):
    add_old(storage)
    optuna.create_study(storage=storage, study_name="new")   # started by an older autotune
    got = warmstart.prepare_join(make_spec(url, SPACE, strategy="prior"), storage,
                                 optuna.samplers.RandomSampler())
    assert isinstance(got, warmstart.PriorSampler) and len(got.source_trials) == 30
    with pytest.raises(warmstart.WarmStartError, match="no study named 'gone'"):
        warmstart.prepare_join(make_spec(url, SPACE, strategy="prior", sources=("gone",)), storage,
                               optuna.samplers.RandomSampler())


def test_the_record_wins_over_a_different_warm_start_in_the_workers_file(url, storage, caplog):
    add_old(storage, name="a")
    add_old(storage, name="b", n=12)
    start(url, storage, make_spec(url, SPACE, sources=("a",), strategy="prior"))
    with caplog.at_level(logging.WARNING, logger="autotune"):
        got = warmstart.prepare_join(make_spec(url, SPACE, sources=("b",), strategy="enqueue"),
                                     storage, optuna.samplers.RandomSampler())
    assert isinstance(got, warmstart.PriorSampler) and len(got.source_trials) == 30
    assert "this file's warm_start (enqueue from b) is ignored" in caplog.text


def test_auto_is_not_resolved_again_when_joining(url, storage):
    add_old(storage, name="first")
    start(url, storage, make_spec(url, SPACE, sources=("auto",), strategy="prior"))
    add_old(storage, name="later", n=5)          # a study created after the run started
    got = warmstart.prepare_join(make_spec(url, SPACE, sources=("auto",), strategy="prior"),
                                 storage, optuna.samplers.RandomSampler())
    assert {t.user_attrs["warm_start_from"] for t in got.source_trials} == {"first"}


def test_sources_in_another_sqlite_storage_are_reopened_from_the_record(tmp_path, url, storage):
    archive = f"sqlite:///{tmp_path / 'archive.db'}"
    add_old(store.open_storage(archive))
    spec = make_spec(url, SPACE, strategy="prior", storage=archive)
    start(url, storage, spec)
    got = warmstart.prepare_join(without_warm_start(spec), storage, optuna.samplers.RandomSampler())
    assert isinstance(got, warmstart.PriorSampler) and len(got.source_trials) == 30


def test_a_masked_password_in_the_record_is_a_warning_and_no_prior(url, storage, caplog):
    study = optuna.create_study(storage=storage, study_name="new")
    study.set_user_attr("warm_start", {"strategy": "prior", "sources": {"old": 30},
                                       "storage": "postgresql://tuner:***@db-host/archive"})
    inner = optuna.samplers.RandomSampler()
    with caplog.at_level(logging.WARNING, logger="autotune"):
        got = warmstart.prepare_join(without_warm_start(make_spec(url, SPACE)), storage, inner)
    assert got is inner
    assert "postgresql://tuner:***@db-host/archive" in caplog.text
    assert "warm_start.storage" in caplog.text and "without the prior strategy" in caplog.text


def test_a_record_whose_source_is_gone_is_a_warning_and_no_prior(url, storage, caplog):
    add_old(storage)
    spec = make_spec(url, SPACE, strategy="prior")
    start(url, storage, spec)
    optuna.delete_study(study_name="old", storage=storage)
    inner = optuna.samplers.RandomSampler()
    with caplog.at_level(logging.WARNING, logger="autotune"):
        assert warmstart.prepare_join(without_warm_start(spec), storage, inner) is inner
    assert "cannot rebuild its warm start" in caplog.text and "'old'" in caplog.text


@pytest.mark.postgres
def test_the_workers_file_supplies_the_password_the_record_masks(url, storage, pg_url):
    secret_url = pg_url.replace("postgres@", "postgres:secret@", 1)   # trust auth ignores it
    assert "secret" in secret_url
    name = f"old-{uuid.uuid4().hex[:8]}"
    add_old(store.open_storage(secret_url), name=name)
    try:
        spec = make_spec(url, SPACE, sources=(name,), strategy="prior", storage=secret_url)
        start(url, storage, spec)
        record = optuna.load_study(study_name="new", storage=storage).user_attrs["warm_start"]
        assert record["storage"] == store.mask_url(secret_url) and "secret" not in str(record)
        got = warmstart.prepare_join(spec, storage, optuna.samplers.RandomSampler())
        assert isinstance(got, warmstart.PriorSampler) and len(got.source_trials) == 30
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)


# ---- through the CLI -------------------------------------------------------------------------

def study_file(tmp_path, name, *, warm=None, trials=1):
    doc = {"study": "quad", "storage": f"sqlite:///{tmp_path / 'store.db'}",
           "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
           "objectives": [{"metric": "val_loss", "direction": "minimize"}],
           "optimizer": {"kind": "tpe", "seed": 0, "n_startup_trials": 10},
           "budget": {"trials": trials}, "parallel": {"workers": 1},
           "objective": "tests.user_objectives:quadratic", "trainer": {"steps": 2}}
    if warm:
        doc["warm_start"] = warm
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_autotune_worker_joins_a_prior_study_with_the_prior(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    rng = np.random.default_rng(0)
    add_source(store.open_storage(url), "old", SearchSpace((fl("x", 0.0, 1.0),)),
               [({"x": float(x)}, float((x - 0.3) ** 2)) for x in rng.uniform(size=40)])
    run_file = study_file(tmp_path, "run", warm={"from": ["old"], "strategy": "prior"})
    assert CliRunner().invoke(main, ["run", str(run_file), "--no-live"]).exit_code == 0
    worker_file = study_file(tmp_path, "worker")          # no warm_start: the record says it
    study = study_mod.prepare(load_spec(worker_file), join_only=True)
    assert isinstance(study.sampler, warmstart.PriorSampler)
    assert len(study.sampler.source_trials) == 40
    result = CliRunner().invoke(main, ["worker", str(worker_file), "--trials", "7", "--no-live"])
    assert result.exit_code == 0, result.output
    xs = [t.params["x"] for t in optuna.load_study(study_name="quad", storage=url).trials[1:]]
    # TPE alone would draw these 6 at random (its first 10 trials); the prior puts them near 0.3
    assert len(xs) == 6 and np.median(np.abs(np.asarray(xs) - 0.3)) < 0.1
