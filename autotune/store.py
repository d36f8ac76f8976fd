"""The SQL study store: opening it, locking it, creating and resuming studies.

Owns: opening a store for a run (tables created once under a lock), for reading only (writing
nothing, not even the schema) and for ``validate``; the claim lock of a study (one process at a
time creates its next trial); create-or-resume of a study with its directions checked. Its parts
live beside it, each re-exported here so that callers import ``autotune.store`` only:
``store_urls`` (URLs, SQLite paths, masking passwords), ``store_engine`` (engine settings, the
retrying storage), ``store_summary`` (what ``status`` lists), and ``autotune._optuna`` (the queries
on Optuna's own tables: ``count_trials``, ``read_trials``, ...).
Must not know about: the model, the scheduler.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import sqlalchemy
import sqlalchemy.exc

from autotune._optuna import (  # noqa: F401 - the queries on Optuna's tables, re-exported
    OPTUNA_TABLES, TrialCounts, count_trials, heartbeat_ages, missing_optuna_tables, pareto_front,
    read_trials, study_id_of, study_trials, trial_id_of, trial_tallies, trial_user_attr_json)
from autotune.store_engine import (  # noqa: F401 - re-exported
    ATTEMPTS, BACKOFF_S, SQLITE_BUSY_TIMEOUT_S, TRANSIENT_ERRORS, RetryingRDBStorage,
    StorageUnavailable, engine_kwargs, install_hooks, is_disk_full, is_transient,
    prepare_sqlite_file, retrying)
from autotune.store_summary import (  # noqa: F401 - re-exported
    GRACE_ATTR, StudySummary, stale_running_trials, sum_trial_user_attr, summarize_studies,
    trial_user_attr_values)
from autotune.store_urls import (  # noqa: F401 - re-exported
    DEFAULT_STORAGE, ENV_STORAGE, StoreError, StoreMissing, check_storage_url, first_error_line,
    is_sqlite, mask_secrets, mask_url, sqlite_path)


def _sqlite_lock_path(url: str) -> Path | None:
    path = sqlite_path(url)
    return None if path is None else path.with_name(path.name + "-autotune-lock")   # beside -wal, -shm


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (one machine only: SQLite is single-machine anyway)."""
    if path is None:
        with _memory_lock:
            yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_memory_lock = threading.RLock()


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    failed_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """Open (and create the tables of) the study store at ``url``.

    Raises StoreError with the masked URL and the cause when it cannot be opened.
    """
    _check_sqlite_folder(url)
    try:
        # Tables are created under a lock (SQLite: a file lock beside the file; PostgreSQL: an
        # advisory lock), so that workers opening a fresh store at once do not race on CREATE
        # TABLE or on the version rows; WAL is switched on before that.
        with _creation_lock(url), warnings.catch_warnings():
            # heartbeats are "experimental" in Optuna since 2.9; the scheduler relies on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if is_sqlite(url):
                prepare_sqlite_file(url)
            for attempt in range(3):
                try:
                    storage = RetryingRDBStorage(
                        url,
                        engine_kwargs=engine_kwargs(url),
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=failed_trial_callback,
                    )
                    break
                except sqlalchemy.exc.IntegrityError:   # a database we cannot lock: another
                    if attempt == 2:                      # process created the rows first
                        raise
    except ModuleNotFoundError as exc:
        raise StoreError(f"storage {mask_url(url)}: database driver missing ({exc.name}); "
                         "install it, e.g. pip install psycopg2-binary") from None
    except Exception as exc:  # SQLAlchemy/driver errors: report, never a traceback
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {first_error_line(exc, url)}") from None
    install_hooks(storage.engine)
    storage.engine.dispose()  # later connections get the hooks
    return storage


def _check_sqlite_folder(url: str) -> None:
    path = sqlite_path(url) if is_sqlite(url) else None
    if path is not None and path.parent != Path("") and not path.parent.is_dir():
        raise StoreError(f"storage {mask_url(url)}: folder {path.parent} does not exist")


def open_checker(url: str) -> optuna.storages.BaseStorage:
    """The store at ``url`` as ``validate`` sees it before a run, writing nothing: a read-only
    reader, or an empty in-memory storage where no store exists yet (``run`` creates it there).
    Raises StoreError where ``run`` could not open it (no such folder, a server that does not
    answer, a file that is no study store)."""
    _check_sqlite_folder(url)
    try:
        return open_reader(url)
    except StoreMissing:
        return optuna.storages.InMemoryStorage()


@contextlib.contextmanager
def _creation_lock(url: str) -> Iterator[None]:
    """One process at a time creates (or checks) the tables of the store at ``url``."""
    if is_sqlite(url):
        with _file_lock(_sqlite_lock_path(url)):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK_NAMESPACE}, {_CREATION_LOCK_ID})")
            conn.commit()
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK_NAMESPACE}, {_CREATION_LOCK_ID})")
                conn.commit()
    finally:
        engine.dispose()


_CREATION_LOCK_ID = -1   # beside the studies' claim locks, whose ids are study ids (>= 1)


def open_reader(url: str) -> optuna.storages.RDBStorage:
    """Open the study store at ``url`` for reading only (``status``, ``best``, ``export``,
    ``report``, the dashboard): it writes nothing, not even the schema.

    A missing file, a file that is no SQLite database, or a database without Optuna's tables
    (an empty file, someone else's database) is a StoreError naming it, and stays as it was;
    half of Optuna's schema is first waited on, since another process may be creating it.
    SQLite is opened ``mode=ro``: the journal mode is left alone, and the reads run in plain
    deferred transactions, so that a long read never holds the write lock the workers need
    (``open_storage`` begins every transaction IMMEDIATE, and one read of 5,000 trials through
    it stalled a worker's write for 6 s, bench/RESULTS.md).
    """
    path = sqlite_path(url) if is_sqlite(url) else None
    if is_sqlite(url) and path is None:
        return open_storage(url)      # in memory: nothing to protect
    if path is not None and not path.exists():
        raise StoreMissing(f"storage {mask_url(url)}: no study store at {path}")
    if path is not None and not path.is_file():
        raise StoreError(f"storage {mask_url(url)}: {path} is not a file")
    kwargs: dict[str, Any] = engine_kwargs(url)
    if path is not None:
        ro_uri = f"file:{_uri_path(path)}?mode=ro"
        kwargs = {"creator": lambda: sqlite3.connect(ro_uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S,
                                                     check_same_thread=False)}
    missing, tables = _schema(url, kwargs)
    if missing and tables & set(OPTUNA_TABLES):
        _wait_for_creation(url)   # part of the schema: perhaps another process is making it
        missing, tables = _schema(url, kwargs)
    if missing:
        where = f"{path}" if path is not None else mask_url(url)
        if len(missing) == len(OPTUNA_TABLES) and not tables:
            raise StoreMissing(f"{where} holds no study store yet (an empty database); start a "
                             "study with `autotune run` first; it was left unchanged")
        raise StoreError(f"{where} is not an autotune study store (it lacks Optuna's tables "
                         f"{', '.join(missing)}); it was left unchanged")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            reader = RetryingRDBStorage(url, skip_table_creation=True,
                                        engine_kwargs=kwargs)
        if path is None:
            install_hooks(reader.engine)
            reader.engine.dispose()
        return reader
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {first_error_line(exc, url)}") from None


def _wait_for_creation(url: str) -> None:
    """Wait until no process holds the creation lock of the store at ``url`` (``open_storage``
    creates the tables under it, so a reader can see half a schema), writing nothing: on SQLite
    only a lock file that is already there is waited on, none is made."""
    if not is_sqlite(url):
        with _creation_lock(url):   # PostgreSQL: its advisory lock, which writes nothing
            pass
        return
    lock = _sqlite_lock_path(url)
    if lock is None:
        return   # in memory: no other process
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return   # no autotune process has made one: nobody is creating the tables
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)   # granted once the creator's exclusive lock is gone
    finally:
        os.close(fd)


def _schema(url: str, engine_options: dict[str, Any]) -> tuple[list[str], set[str]]:
    """``missing_optuna_tables`` of the database at ``url``, opened with ``engine_options``."""
    try:
        engine = sqlalchemy.create_engine(url, **engine_options)
        try:
            return missing_optuna_tables(engine)
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        raise StoreError(f"storage {mask_url(url)}: database driver missing ({exc.name})") from None
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {first_error_line(exc, url)}") from None


def _uri_path(path: Path) -> str:
    from urllib.parse import quote
    return quote(str(path.resolve()))


@contextlib.contextmanager
def study_lock(storage: optuna.storages.RDBStorage, study_id: int) -> Iterator[None]:
    """Hold the study's claim lock: one process at a time counts trials and creates the next one.

    PostgreSQL: a session advisory lock (released by the server if the process dies), so it holds
    across machines. SQLite: an ``flock`` beside the database file (one machine). Other databases:
    a lock within this process only.
    """
    url = str(storage.engine.url)
    if is_sqlite(url):
        with _file_lock(_sqlite_lock_path(url)):
            yield
    elif storage.engine.dialect.name == "postgresql":
        with storage.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK_NAMESPACE}, {int(study_id)})")
            conn.commit()
            try:
                yield
            finally:
                try:
                    conn.exec_driver_sql(
                        f"SELECT pg_advisory_unlock({_LOCK_NAMESPACE}, {int(study_id)})")
                    conn.commit()
                except TRANSIENT_ERRORS:
                    pass   # the connection died, and the server released its lock with it
    else:
        with _memory_lock:
            yield


_LOCK_NAMESPACE = 0x6174  # "at": keeps our advisory locks apart from other applications'


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


def check_directions(name: str, have: Sequence[Any], want: Sequence[str]) -> None:
    """A study resumed must keep its directions (``have``: Optuna's StudyDirection values)."""
    have_names = [d.name.lower() for d in have]
    want_names = [d.lower() for d in want]
    if have_names != want_names:
        raise StoreError(
            f"study {name!r} already exists with directions {have_names}, but the spec asks for "
            f"{want_names}; use another study name (--study) to start afresh")


def check_existing_study(storage: optuna.storages.BaseStorage, name: str,
                         directions: Sequence[str]) -> None:
    """What resuming ``name`` in ``storage`` needs, checked without writing."""
    if study_exists(storage, name):
        check_directions(name, storage.get_study_directions(storage.get_study_id_from_name(name)),
                         directions)


def create_or_load_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    directions: Sequence[str],
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or resume it if it exists with the same directions."""
    return create_or_load(storage, name, directions, sampler=sampler, pruner=pruner)[0]


def create_or_load(
    storage: optuna.storages.BaseStorage,
    name: str,
    directions: Sequence[str],
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, bool]:
    """``create_or_load_study``, and whether this call created the study: of processes that
    start a new study at the same moment (the pods of a Kubernetes Job), exactly one did."""
    if study_exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        check_directions(name, study.directions, directions)
        return study, False
    try:
        return optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                                   sampler=sampler, pruner=pruner), True
    except optuna.exceptions.DuplicatedStudyError:   # another process created it just now
        return create_or_load(storage, name, directions, sampler=sampler, pruner=pruner)
