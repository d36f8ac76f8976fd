"""Engines of the study store: connection settings, and the RDBStorage that rides out a dropped
connection.

Owns: SQLAlchemy engine settings that let many workers share one database (SQLite: WAL, busy
timeout, ``BEGIN IMMEDIATE`` writes; PostgreSQL: pre-pinged pool, sessions in UTC), which database
errors are transient and the retrying of them (``retrying``, ``RetryingRDBStorage``), and telling a
full disk. Must not know about: studies, the model, the scheduler.
"""
from __future__ import annotations

import errno
import functools
import logging
import sqlite3
import time
from typing import Any, Callable

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event

from autotune.store_urls import first_error_line, is_sqlite, sqlite_path

SQLITE_BUSY_TIMEOUT_S = 120.0

_log = logging.getLogger("autotune")


def prepare_sqlite_file(url: str) -> None:
    """Switch the file to WAL once, before any engine touches it (the mode is stored in the file)."""
    path = sqlite_path(url)
    if path is None:
        return
    con = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode = WAL")
    finally:
        con.close()


def _sqlite_engine_kwargs() -> dict[str, Any]:
    # isolation_level=None hands transaction control to our "begin" hook below.
    return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None}}


def _install_sqlite_hooks(engine: sqlalchemy.engine.Engine) -> None:
    """WAL so readers never block writers; BEGIN IMMEDIATE so a writer waits for the lock
    (busy timeout) instead of failing at once when it upgrades a read transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA synchronous = NORMAL")  # WAL itself is set once per file
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_kwargs(url: str) -> dict[str, Any]:
    if is_sqlite(url):
        return _sqlite_engine_kwargs()
    if url.startswith(("postgresql", "mysql", "mariadb")):
        return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10, "pool_recycle": 1800}
    return {}


def install_hooks(engine: sqlalchemy.engine.Engine) -> None:
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
    elif engine.dialect.name == "postgresql":
        _install_postgresql_hooks(engine)


def _install_postgresql_hooks(engine: sqlalchemy.engine.Engine) -> None:
    """Every session in UTC. Optuna stores heartbeats as ``now()`` in a ``timestamp without time
    zone`` column, which PostgreSQL converts with the session's time zone (the server's, the
    database's or role's setting, or the client's ``PGTZ``): with two time zones among the
    processes of a study, live trials looked hours old and dead ones never stale."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True          # a SET inside a transaction rolled back is undone
        cur = dbapi_conn.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        cur.close()
        dbapi_conn.autocommit = autocommit


TRANSIENT_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                    sqlalchemy.exc.DisconnectionError, optuna.exceptions.StorageInternalError)
ATTEMPTS, BACKOFF_S = 5, 0.5    # first wait 0.5 s, doubled after each failed attempt


class StorageUnavailable(optuna.exceptions.StorageInternalError):
    """The database kept failing at the connection level through every retry."""


def is_transient(exc: BaseException) -> bool:
    """A connection-level error worth retrying: a dropped connection, a restarting server, a
    locked SQLite file; also when it caused another (Optuna wraps errors in StorageInternalError,
    and a query on a session whose connection died fails again). Not an error we already retried
    (StorageUnavailable), nor a constraint violation, nor a full disk (``is_disk_full``: seconds of
    backoff do not free space; the run stops at once and says so)."""
    if is_disk_full(exc):
        return False
    seen: BaseException | None = exc
    for _ in range(8):   # the chain of causes, bounded
        if seen is None or isinstance(seen, (StorageUnavailable, sqlalchemy.exc.IntegrityError)):
            return False
        if isinstance(seen, _CONNECTION_ERRORS) or getattr(seen, "connection_invalidated", False):
            return True
        if str(getattr(getattr(seen, "orig", None), "sqlstate", None) or "").startswith(_CONNECTION_SQLSTATES):
            return True   # a lost connection that the driver raised as another error class
        seen = seen.__cause__ or seen.__context__
    return False


# SQLSTATEs of a lost or refused connection: class 08 (connection exception) and 57P01-57P03 (the
# server shut down or terminated the backend, or cannot take connections yet).
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")
_CONNECTION_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                      sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.PendingRollbackError)


def retrying(fn: Callable[..., Any], *args: Any, attempts: int = ATTEMPTS, **kwargs: Any) -> Any:
    """Call ``fn``, retrying with backoff (0.5, 1, 2, 4 s) on connection-level database errors,
    so that a restarting PostgreSQL or a dropped connection does not end a study. The last
    attempt's error is raised as it is."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            wait = BACKOFF_S * 2 ** attempt
            _log.warning("database error, retrying in %.1fs: %s", wait, first_error_line(exc))
            time.sleep(wait)
    raise AssertionError("unreachable")


def _retried(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return retrying(method, self, *args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise StorageUnavailable(f"storage: the database failed {ATTEMPTS} times in a row: "
                                     f"{first_error_line(exc)}") from exc
    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose reads and idempotent writes ride out a dropped connection or a
    restarting server (``retrying``), raising StorageUnavailable only after the last attempt.

    Not retried here: creating a trial and changing its state, which are not idempotent (a
    commit that went through before the connection dropped would be done twice); the scheduler
    retries those whole steps (claim, record) itself."""

    def __setstate__(self, state: dict[str, Any]) -> None:   # unpickled: a new engine, hooked
        super().__setstate__(state)
        install_hooks(self.engine)
        self.engine.dispose()


for _name in (
    # reads
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "get_trial_param",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
    "get_best_trial", "_get_best_trial_id", "_get_stale_trial_ids",
    # writes that are the same done twice
    "set_study_user_attr", "set_study_system_attr", "set_trial_param", "_set_trial_param",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "record_heartbeat",
):
    setattr(RetryingRDBStorage, _name, _retried(getattr(optuna.storages.RDBStorage, _name)))


def is_disk_full(exc: BaseException) -> bool:
    """A write the database refused for want of space (SQLite's "database or disk is full",
    ENOSPC, PostgreSQL's disk_full), anywhere in the chain of causes."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        text = str(getattr(seen, "orig", None) or seen).lower()
        if ("database or disk is full" in text or "no space left on device" in text
                or getattr(seen, "errno", None) == errno.ENOSPC
                or getattr(getattr(seen, "orig", None), "sqlstate", None) == "53100"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
