from __future__ import annotations

import threading

import optuna
import pytest

from autotune import dashboard, store

from .synthetic import build_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def storage_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session; tests read its studies and never change them."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'studies.db'}"


@pytest.fixture(scope="session")
def storage(storage_url: str) -> optuna.storages.RDBStorage:
    """Opened the way autotune opens it (WAL, busy timeout)."""
    return store.open_storage(storage_url)


@pytest.fixture(scope="session")
def single_study(storage: optuna.storages.RDBStorage) -> optuna.Study:
    """40 trials of one objective (val_loss) with pruned, failed and warm-started ones."""
    return build_study(storage, "single", 40, objectives=1, seed=1)


@pytest.fixture(scope="session")
def multi_study(storage: optuna.storages.RDBStorage) -> optuna.Study:
    """40 trials of two objectives (val_loss, latency_ms)."""
    return build_study(storage, "multi", 40, objectives=2, seed=2)


@pytest.fixture(scope="session")
def server(storage_url: str, single_study: optuna.Study, multi_study: optuna.Study):
    """The dashboard on the session's store, on a free port of 127.0.0.1."""
    srv = dashboard.make_server(storage_url, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    thread.join(5)
