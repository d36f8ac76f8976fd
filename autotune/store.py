"""The SQL study store: storage URLs, engine settings, opening and listing studies.

Owns: which URL is used (``--storage`` > ``AUTOTUNE_STORAGE`` > the study file > the default), the
SQLAlchemy engine settings that let many workers share one database (SQLite: WAL, busy timeout,
``BEGIN IMMEDIATE`` writes; PostgreSQL: pre-pinged pool), Optuna's heartbeat and retry settings,
create-or-resume of a study, and masking passwords in anything printed.
Must not know about: the model, the scheduler.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
import sqlalchemy
from sqlalchemy import event

DEFAULT_STORAGE = "sqlite:///autotune.db"
ENV_STORAGE = "AUTOTUNE_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 120.0

_log = logging.getLogger("autotune")


class StoreError(Exception):
    """A storage URL that cannot be opened, or a study that cannot be created/loaded as asked."""


def resolve_storage_url(cli_url: str | None = None, spec_url: str | None = None) -> str:
    """The URL to use: the command line wins, then ``AUTOTUNE_STORAGE``, then the study file."""
    return cli_url or os.environ.get(ENV_STORAGE) or spec_url or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///path`` URL, or None for in-memory databases."""
    m = re.match(r"sqlite(\+\w+)?:///(.*)$", url)
    if not m or m.group(2) in ("", ":memory:"):
        return None
    return Path(m.group(2))


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
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
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
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None and path.parent != Path("") and not path.parent.exists():
            raise StoreError(f"storage {mask_url(url)}: folder {path.parent} does not exist")
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=_engine_kwargs(url),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            failed_trial_callback=failed_trial_callback,
        )
    except ModuleNotFoundError as exc:
        raise StoreError(f"storage {mask_url(url)}: database driver missing ({exc.name}); "
                         "install it, e.g. pip install psycopg2-binary") from None
    except Exception as exc:  # SQLAlchemy/driver errors: report, never a traceback
        raise StoreError(f"storage {mask_url(url)} cannot be opened: {_first_line(exc)}") from None
    if is_sqlite(url):
        _install_sqlite_hooks(storage.engine)
        storage.engine.dispose()  # later connections get the hooks
    return storage


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_storage_url(url: str) -> None:
    """Cheap syntax check (no connection): raises StoreError for URLs SQLAlchemy cannot parse."""
    try:
        sqlalchemy.engine.make_url(url)
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)!r} is not a database URL: {_first_line(exc)}") from None


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


def create_or_load_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    directions: Sequence[str],
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or resume it if it exists with the same directions."""
    if study_exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        have = [d.name.lower() for d in study.directions]
        want = [d.lower() for d in directions]
        if have != want:
            raise StoreError(
                f"study {name!r} already exists with directions {have}, but the spec asks for {want}; "
                "use another study name (--study) to start afresh")
        return study
    return optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                               sampler=sampler, pruner=pruner)


@dataclass(frozen=True)
class StudySummary:
    name: str
    directions: tuple[str, ...]
    counts: dict[str, int]          # state name -> trials
    best_values: tuple[float, ...] | None   # single objective only
    n_trials: int
    user_attrs: dict[str, Any]


def summarize_studies(storage: optuna.storages.BaseStorage) -> list[StudySummary]:
    out = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        best = None
        if len(study.directions) == 1 and counts.get("COMPLETE"):
            best = tuple(study.best_trial.values)
        out.append(StudySummary(s.study_name, tuple(d.name.lower() for d in study.directions),
                                counts, best, len(trials), dict(study.user_attrs)))
    return out
