"""The store's concurrency settings: WAL, the claim lock, counting trials."""
from __future__ import annotations

import multiprocessing
import sqlite3
import time
import uuid

import optuna
import pytest
import sqlalchemy

from autotune import store, store_engine

optuna.logging.set_verbosity(optuna.logging.WARNING)
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


def test_sqlite_files_are_switched_to_wal(tmp_path):
    path = tmp_path / "wal.db"
    store.open_storage(f"sqlite:///{path}")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _hold_lock(url: str, study_id: int, log: str) -> None:
    storage = store.open_storage(url)
    for _ in range(3):
        with store.study_lock(storage, study_id):
            with open(log, "a") as f:
                f.write("enter\n")
            time.sleep(0.05)
            with open(log, "a") as f:
                f.write("leave\n")


def test_study_lock_excludes_other_processes(url, tmp_path):
    storage = store.open_storage(url)
    study = optuna.create_study(storage=storage, study_name=f"lock-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold_lock, args=(url, study._study_id, str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    optuna.delete_study(study_name=study.study_name, storage=storage)
    lines = log.read_text().split()
    assert lines == ["enter", "leave"] * 9


def test_count_trials_counts_running_trials_with_a_heartbeat_only(url):
    storage = store.open_storage(url, heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name=f"count-{uuid.uuid4().hex[:8]}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    study.enqueue_trial({"x": 0.5})
    with_beat, without = study.ask(), study.ask()
    storage.record_heartbeat(with_beat._trial_id)
    counts = store.count_trials(storage, study._study_id)
    optuna.delete_study(study_name=study.study_name, storage=storage)
    assert (counts.complete, counts.running, counts.running_without_heartbeat) == (2, 1, 1)
    assert counts.finished == 2 and counts.waiting == 0


def test_retrying_rides_out_connection_errors_and_gives_up_after_the_last_attempt(monkeypatch):
    import sqlalchemy.exc

    monkeypatch.setattr(store_engine.time, "sleep", lambda _s: None)
    calls = []

    def flaky(fail_times: int) -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "ok"

    assert store.retrying(flaky, 2) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        store.retrying(flaky, 10, attempts=3)
    assert len(calls) == 3


def _read_transaction_blocks_a_writer(storage: optuna.storages.RDBStorage, path) -> bool:
    """Hold a read transaction open through ``storage`` and try a write from another connection."""
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM trials")).fetchall()   # opens the txn
        writer = sqlite3.connect(path, timeout=0.5, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE studies SET study_name = study_name")
            writer.execute("COMMIT")
            return False
        except sqlite3.OperationalError:        # database is locked
            return True
        finally:
            writer.close()
            conn.rollback()


def test_readers_never_hold_the_write_lock_that_workers_need(tmp_path):
    path = tmp_path / "read.db"
    url = f"sqlite:///{path}"
    optuna.create_study(storage=store.open_storage(url), study_name="r").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert _read_transaction_blocks_a_writer(store.open_storage(url), path)   # a worker's handle
    assert not _read_transaction_blocks_a_writer(store.open_reader(url), path)
    assert len(optuna.load_study(study_name="r", storage=store.open_reader(url)).trials) == 3


def test_a_reader_of_a_missing_sqlite_file_fails_without_creating_it(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(store.StoreError, match="no study store at"):
        store.open_reader(f"sqlite:///{path}")
    assert not path.exists()
