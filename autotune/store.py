"""The SQL study store: storage URLs, engine settings, opening and listing studies.

Owns: which URL is used (``--storage`` > ``AUTOTUNE_STORAGE`` > the study file > the default), the
SQLAlchemy engine settings that let many workers share one database (SQLite: WAL, busy timeout,
``BEGIN IMMEDIATE`` writes; PostgreSQL: pre-pinged pool), Optuna's heartbeat and retry settings,
create-or-resume of a study, and masking passwords in anything printed. Its queries on Optuna's
own tables live in ``autotune._optuna`` (re-exported here: ``count_trials``, ``read_trials``, ...).
Must not know about: the model, the scheduler.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event

from autotune import outcomes
from autotune._optuna import (  # noqa: F401 - the queries on Optuna's tables, re-exported
    OPTUNA_TABLES, TrialCounts, count_trials, heartbeat_ages, missing_optuna_tables, pareto_front,
    read_trials, study_id_of, study_trials, trial_id_of, trial_tallies, trial_user_attr_json)

DEFAULT_STORAGE = "sqlite:///autotune.db"
ENV_STORAGE = "AUTOTUNE_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 120.0

_log = logging.getLogger("autotune")


class StoreError(Exception):
    """A storage URL that cannot be opened, or a study that cannot be created/loaded as asked."""


class StoreMissing(StoreError):
    """No study store at the URL yet (a missing SQLite file, an empty database): ``run`` creates
    one there, a reader finds nothing."""


_SECRET_KEYS = r"(?:password|passwd|pwd|sslpassword|secret|token|api_?key|access_?key)"
# scheme://user:SECRET@ ; greedy up to the last "@" of the token: a password may hold "/", ":", "@"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^\s:/@'\"]*):[^\s'\"]*@")
# ?password=SECRET&... (URL query) and password=SECRET / password='SEC RET' (libpq DSN text)
_QUERY_SECRET = re.compile(rf"(?P<head>[?&;]{_SECRET_KEYS}=)[^&#\s'\"]*", re.IGNORECASE)
_DSN_SECRET = re.compile(rf"(?P<head>\b{_SECRET_KEYS}\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'\"&;]+)",
                         re.IGNORECASE)


def mask_secrets(text: str, url: str | None = None) -> str:
    """``text`` with every password hidden: in URLs (``user:***@``, ``?password=***``), in libpq
    DSN text (``password=***``), and, when ``url`` is given, its password wherever it appears
    (a driver's error message may quote the DSN it was given)."""
    if url is not None:
        for secret in _secrets_of(url):
            text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\g<head>:***@", text)
    text = _QUERY_SECRET.sub(r"\g<head>***", text)
    return _DSN_SECRET.sub(r"\g<head>***", text)


def _secrets_of(url: str) -> list[str]:
    found = []
    userinfo = re.match(r"[A-Za-z][\w+.-]*://[^\s:/@]*:(?P<pw>\S*)@", url)
    if userinfo:   # up to the last "@": what the user meant, also where SQLAlchemy splits earlier
        found += [userinfo["pw"], *userinfo["pw"].split("@")]
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        return sorted((s for s in found if s), key=len, reverse=True)
    found += [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if re.fullmatch(_SECRET_KEYS, key, re.IGNORECASE):
            found += [value] if isinstance(value, str) else list(value)
    return sorted((s for s in found if s), key=len, reverse=True)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` -> ``postgresql://user:***@host/db?password=***``.

    SQLAlchemy's own rendering with the password hidden, secret query parameters masked too;
    for what SQLAlchemy cannot parse (or parses oddly, as ``p@ss`` in a password), the
    patterns of ``mask_secrets``."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        if parsed.password is not None or any(
                re.fullmatch(_SECRET_KEYS, k, re.IGNORECASE) for k in parsed.query):
            parsed = parsed.set(query={k: ("***" if re.fullmatch(_SECRET_KEYS, k, re.IGNORECASE)
                                           else v) for k, v in parsed.query.items()})
            url = parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:
        pass
    return mask_secrets(url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///path`` URL, or None for in-memory databases."""
    m = re.match(r"sqlite(\+\w+)?:///(.*)$", url)
    if not m or m.group(2) in ("", ":memory:"):
        return None
    return Path(m.group(2))


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


def _prepare_sqlite_file(url: str) -> None:
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


def _engine_kwargs(url: str) -> dict[str, Any]:
    if is_sqlite(url):
        return _sqlite_engine_kwargs()
    if url.startswith(("postgresql", "mysql", "mariadb")):
        return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10, "pool_recycle": 1800}
    return {}


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
                _prepare_sqlite_file(url)
            for attempt in range(3):
                try:
                    storage = RetryingRDBStorage(
                        url,
                        engine_kwargs=_engine_kwargs(url),
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
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {_first_line(exc, url)}") from None
    _install_hooks(storage.engine)
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


def _install_hooks(engine: sqlalchemy.engine.Engine) -> None:
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
    (an empty file, someone else's database) is a StoreError naming it, and stays as it was.
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
    kwargs: dict[str, Any] = _engine_kwargs(url)
    if path is not None:
        ro_uri = f"file:{_uri_path(path)}?mode=ro"
        kwargs = {"creator": lambda: sqlite3.connect(ro_uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S,
                                                     check_same_thread=False)}
    try:
        engine = sqlalchemy.create_engine(url, **kwargs)
        try:
            missing, tables = missing_optuna_tables(engine)
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        raise StoreError(f"storage {mask_url(url)}: database driver missing ({exc.name})") from None
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {_first_line(exc, url)}") from None
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
            _install_hooks(reader.engine)
            reader.engine.dispose()
        return reader
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {_first_line(exc, url)}") from None


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


GRACE_ATTR = "autotune:grace_period"   # trial system attr: its scheduler's grace period, s


def stale_running_trials(storage: optuna.storages.RDBStorage, study_id: int,
                         trials: Sequence[optuna.trial.FrozenTrial]) -> dict[int, float]:
    """Seconds without a heartbeat of each RUNNING trial whose scheduler's grace period has run
    out, by trial number: its scheduler died, and the next ``run`` or ``worker`` fails it.
    Reads only."""
    from autotune.spec_types import ParallelSpec
    ages = heartbeat_ages(storage, study_id)
    stale = {}
    for t in trials:
        age = ages.get(trial_id_of(t))
        if age is not None and age > t.system_attrs.get(GRACE_ATTR, ParallelSpec.grace_period):
            stale[t.number] = age
    return stale


def sum_trial_user_attr(storage: optuna.storages.RDBStorage, study_id: int, key: str) -> float:
    """Sum a numeric user attribute over all trials of a study (e.g. ``gpu_seconds``)."""
    return sum(trial_user_attr_values(storage, study_id, key))


def trial_user_attr_values(storage: optuna.storages.RDBStorage, study_id: int, key: str,
                           state: optuna.trial.TrialState | None = None) -> list[float]:
    """A numeric user attribute of every trial of a study (of those in ``state`` only, if given)
    that carries it, in one query (e.g. ``slot_seconds`` of the complete trials)."""
    values = []
    for value in trial_user_attr_json(storage, study_id, key, None if state is None else [state]):
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            pass
    return values


TRANSIENT_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                    sqlalchemy.exc.DisconnectionError, optuna.exceptions.StorageInternalError)
ATTEMPTS, BACKOFF_S = 5, 0.5    # first wait 0.5 s, doubled after each failed attempt


class StorageUnavailable(optuna.exceptions.StorageInternalError):
    """The database kept failing at the connection level through every retry."""


def is_transient(exc: BaseException) -> bool:
    """A connection-level error worth retrying: a dropped connection, a restarting server, a
    locked SQLite file; also when it caused another (Optuna wraps errors in StorageInternalError,
    and a query on a session whose connection died fails again). Not an error we already retried
    (StorageUnavailable), nor a constraint violation."""
    seen: BaseException | None = exc
    for _ in range(8):   # the chain of causes, bounded
        if seen is None or isinstance(seen, (StorageUnavailable, sqlalchemy.exc.IntegrityError)):
            return False
        if isinstance(seen, _CONNECTION_ERRORS) or getattr(seen, "connection_invalidated", False):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
            _log.warning("database error, retrying in %.1fs: %s", wait, _first_line(exc))
            time.sleep(wait)
    raise AssertionError("unreachable")


def _retried(method: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return retrying(method, self, *args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise StorageUnavailable(f"storage: the database failed {ATTEMPTS} times in a row: "
                                     f"{_first_line(exc)}") from exc
    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose reads and idempotent writes ride out a dropped connection or a
    restarting server (``retrying``), raising StorageUnavailable only after the last attempt.

    Not retried here: creating a trial and changing its state, which are not idempotent (a
    commit that went through before the connection dropped would be done twice); the scheduler
    retries those whole steps (claim, record) itself."""

    def __setstate__(self, state: dict[str, Any]) -> None:   # unpickled: a new engine, hooked
        super().__setstate__(state)
        _install_hooks(self.engine)
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


def _first_line(exc: BaseException, url: str | None = None) -> str:
    """The first line of a (driver's) error, passwords masked: it may quote the DSN."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__   # Optuna's own text blames "invalid data in the commit"
    text = mask_secrets(str(getattr(exc, "orig", None) or exc).strip(), url)
    return text.splitlines()[0] if text else type(exc).__name__


def check_storage_url(url: str) -> None:
    """Cheap syntax check (no connection): raises StoreError for URLs SQLAlchemy cannot parse."""
    try:
        sqlalchemy.engine.make_url(url)
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)!r} is not a database URL: {_first_line(exc, url)}") from None


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


@dataclass(frozen=True)
class StudySummary:
    """What ``status`` lists of a study, read without loading its trials."""

    name: str
    directions: tuple[str, ...]
    counts: dict[str, int]          # state name -> trials
    best_values: tuple[float, ...] | None   # single objective only
    n_trials: int
    user_attrs: dict[str, Any]
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)   # outcomes.outcome_counts
    time_shares: dict[str, float] | None = None                          # outcomes.time_shares
    stale: dict[int, float] = dataclasses.field(default_factory=dict)   # see stale_running_trials


def summarize_studies(storage: optuna.storages.BaseStorage) -> list[StudySummary]:
    """Every study of the store, in creation order. On an RDB store the trials are counted by
    state and their ``time_s`` read in two queries for the whole store (``trial_tallies``);
    only the best trial and the running ones are loaded. Other storages: ``_summary_from_trials``,
    the plain reference that the tests compare it with."""
    frozen = storage.get_all_studies()
    if not isinstance(storage, optuna.storages.RDBStorage):
        return [_summary_from_trials(storage, s) for s in frozen]
    tallies = trial_tallies(storage)
    out = []
    for s in frozen:
        counts, outcome_counts, time_parts = tallies.get(study_id_of(s), ({}, {}, []))
        best = None
        if len(s.directions) == 1 and counts.get("COMPLETE"):
            best = tuple(optuna.load_study(study_name=s.study_name, storage=storage).best_trial.values)
        stale = {}
        if counts.get("RUNNING"):
            running = storage.get_all_trials(study_id_of(s), deepcopy=False,
                                             states=(optuna.trial.TrialState.RUNNING,))
            stale = stale_running_trials(storage, study_id_of(s), running)
        out.append(StudySummary(s.study_name, tuple(d.name.lower() for d in s.directions), counts,
                                best, sum(counts.values()), dict(s.user_attrs),
                                outcomes.in_order(outcome_counts), outcomes.shares_of(time_parts), stale))
    return out


def _summary_from_trials(storage: optuna.storages.BaseStorage,
                         frozen: optuna.study.FrozenStudy) -> StudySummary:
    """``summarize_studies`` of one study the plain way: from all its trials."""
    study = optuna.load_study(study_name=frozen.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best = None
    if len(study.directions) == 1 and counts.get("COMPLETE"):
        best = tuple(study.best_trial.values)
    return StudySummary(frozen.study_name, tuple(d.name.lower() for d in study.directions), counts,
                        best, len(trials), dict(study.user_attrs), outcomes.outcome_counts(trials),
                        outcomes.time_shares(trials))


def is_disk_full(exc: BaseException) -> bool:
    """A write the database refused for want of space (SQLite's "database or disk is full",
    ENOSPC, PostgreSQL's disk_full), anywhere in the chain of causes."""
    import errno
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
