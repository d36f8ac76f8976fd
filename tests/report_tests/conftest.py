from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import build_study  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def storage_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session; tests read its studies and never change them."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'studies.db'}"


@pytest.fixture(scope="session")
def single_study(storage_url: str) -> optuna.Study:
    """40 trials of one objective (val_loss) with pruned, failed and warm-started ones."""
    return build_study(storage_url, "single", 40, objectives=1, seed=1)


@pytest.fixture(scope="session")
def multi_study(storage_url: str) -> optuna.Study:
    """40 trials of two objectives (val_loss, latency_ms)."""
    return build_study(storage_url, "multi", 40, objectives=2, seed=2)
