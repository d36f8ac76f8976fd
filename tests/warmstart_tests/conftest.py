"""Fixtures: a real SQLite study store in tmp_path."""
from __future__ import annotations

import optuna
import pytest

from autotune import store

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def storage(url):
    return store.open_storage(url)
