"""Fixtures: real study stores (SQLite in tmp_path, the PostgreSQL of ``pg_url`` in
tests/conftest.py) and helpers."""
from __future__ import annotations

import uuid
import warnings

import optuna
import pytest

from autotune import store

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")

@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


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
