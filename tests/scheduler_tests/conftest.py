"""Fixtures: real study stores (SQLite in tmp_path, the PostgreSQL at 127.0.0.1:5432) and helpers.

PostgreSQL tests skip where no server answers, except under CI=true, where they fail.
"""
from __future__ import annotations

import os
import uuid
import warnings

import optuna
import pytest

from autotune import store

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")

PG_URL = os.environ.get("AUTOTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    try:
        store.open_storage(PG_URL).engine.dispose()
        return None
    except store.StoreError as exc:
        return str(exc)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def pg_url() -> str:
    problem = _pg_reachable()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL needed in CI: {problem}")
        pytest.skip(f"no PostgreSQL: {problem}")
    return PG_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def study_name(storage_url):
    """A unique study name; the study is deleted afterwards (PostgreSQL is shared)."""
    name = f"sched-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=store.open_storage(storage_url))
    except (KeyError, store.StoreError):
        pass
