"""The study store under hostile conditions: passwords in URLs and driver errors, read-only commands
on files that are no study store, time zones, concurrent creation, dropped connections."""
from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from pathlib import Path

import optuna
import sqlalchemy
import pytest
from click.testing import CliRunner

from autotune import store, store_engine, store_urls
from autotune.cli import main

optuna.logging.set_verbosity(optuna.logging.WARNING)

CLOSED_PORT = "127.0.0.1:1"    # nothing listens there: the connection fails at once


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# --- 5. no password is ever printed -------------------------------------------------------------

SECRET_URLS = [
    # (URL, the secret that must never be printed)
    (f"postgresql://user:pa/ss@{CLOSED_PORT}/db", "pa/ss"),
    (f"postgresql://:pw-only-secret@{CLOSED_PORT}/db", "pw-only-secret"),
    (f"postgresql://u@{CLOSED_PORT}/db?password=query-secret", "query-secret"),
    (f"postgresql://u@{CLOSED_PORT}/db?sslmode=bogus&password=query-secret", "query-secret"),
    (f"postgresql://u:at@sign-secret@{CLOSED_PORT}/db", "sign-secret"),
    (f"postgresql://u:colon:secret@{CLOSED_PORT}/db", "colon:secret"),
    (f"postgresql://u:ipv6-secret@[::1/db", "ipv6-secret"),          # SQLAlchemy cannot parse it
]


@pytest.mark.parametrize("url, secret", SECRET_URLS)
def test_mask_url_hides_every_form_of_password(url, secret):
    masked = store.mask_url(url)
    assert secret not in masked and "***" in masked


@pytest.mark.parametrize("url, secret", SECRET_URLS)
def test_status_on_an_unreachable_store_never_prints_the_password(url, secret):
    result = invoke("status", "--storage", url)
    assert result.exit_code == 2
    assert "error: storage" in result.output and "***" in result.output
    assert secret not in result.output


@pytest.mark.parametrize("command", [["best", "s"], ["export", "s"], ["validate", "x.yaml"]])
def test_other_commands_never_print_the_password_either(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"postgresql://user:pa/ss@{CLOSED_PORT}/db?password=query-secret"
    if command[0] == "validate":
        (tmp_path / "x.yaml").write_text(
            f"study: s\nstorage: '{url}'\nspace: {{x: {{type: float, low: 0, high: 1}}}}\n"
            "objectives: [{metric: val_loss, direction: minimize}]\n")
        result = invoke(*command)
    else:
        result = invoke(*command, "--storage", url)
    assert "pa/ss" not in result.output and "query-secret" not in result.output


def test_driver_errors_quoting_the_dsn_are_masked():
    text = "invalid dsn: host=h user=u password=s3cr3t dbname=x; password='a b' at postgresql://u:z9@h"
    masked = store.mask_secrets(text)
    assert "s3cr3t" not in masked and "a b" not in masked and "z9" not in masked
    assert store.mask_secrets("wrong password pa/ss", "postgresql://u:pa/ss@h/db") == "wrong password ***"


def test_urls_without_a_password_are_printed_as_given():
    for url in ("sqlite:///autotune.db", "sqlite:////tmp/a b/x.db", "postgresql://u@h:5432/db?sslmode=require"):
        assert store.mask_url(url) == url


# --- 10. read-only commands never write ---------------------------------------------------------

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _not_a_store(kind: str, path: Path) -> Path:
    if kind == "foreign":
        con = sqlite3.connect(path)
        con.executescript("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        con.close()
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not a database at all\n" * 50)
    return path


READ_ONLY = [["status"], ["best", "s"], ["export", "s"], ["report", "s"]]


@pytest.mark.parametrize("kind", ["foreign", "empty", "text"])
@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
def test_read_only_commands_leave_a_file_that_is_no_study_store_untouched(kind, command, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _not_a_store(kind, tmp_path / f"{kind}.db")
    before = _digest(path)
    result = invoke(*command, "--storage", f"sqlite:///{path}")
    assert result.exit_code == 2
    assert str(path) in result.output and "Traceback" not in result.output
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]   # no -wal, -shm, lock, report


def test_a_foreign_sqlite_file_is_named_as_no_study_store(tmp_path):
    path = _not_a_store("foreign", tmp_path / "foreign.db")
    result = invoke("best", "s", "--storage", f"sqlite:///{path}")
    assert result.exit_code == 2
    assert f"error: {path} is not an autotune study store" in result.output


@pytest.mark.parametrize("command", READ_ONLY[1:], ids=lambda c: c[0])
def test_read_only_commands_on_a_missing_file_do_not_create_it(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "missing.db"
    result = invoke(*command, "--storage", f"sqlite:///{path}")
    assert result.exit_code == 2 and f"no study store at {path}" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_read_only_commands_create_no_tables_in_an_empty_postgresql_database(own_pg_database):
    url, _admin = own_pg_database
    for command in READ_ONLY:
        result = invoke(*command, "--storage", url)
        assert result.exit_code == 2 and "holds no study store yet" in result.output
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        assert sqlalchemy.inspect(conn).get_table_names() == []
    engine.dispose()


def test_read_only_commands_leave_a_rollback_journal_store_as_it_is(tmp_path):
    """A store written by plain Optuna (no WAL) is read, not converted."""
    path = tmp_path / "plain.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="s").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _digest(path)
    for command in (["status"], ["best", "s"], ["export", "s"]):
        assert invoke(*command, "--storage", f"sqlite:///{path}").exit_code == 0
    assert _digest(path) == before
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


# --- 2. heartbeats judged the same in every time zone ------------------------------------------

_REPO = Path(__file__).resolve().parents[2]

# a scheduler elsewhere: starts two trials and beats for both
_BEATING_SCHEDULER = """
import sys, warnings, optuna
warnings.simplefilter("ignore")
from autotune import store
storage = store.open_storage(sys.argv[1], heartbeat_interval=1, grace_period=60)
study = optuna.create_study(storage=storage, study_name=sys.argv[2])
live, dead = study.ask(), study.ask()
for trial in (live, dead):
    storage.record_heartbeat(trial._trial_id)
print(live._trial_id, dead._trial_id)
"""

# this machine's scheduler: fails the trials whose heartbeat is older than its grace period (60 s)
_SWEEPING_SCHEDULER = """
import json, sys, warnings, optuna
warnings.simplefilter("ignore")
from autotune import store
from autotune.scheduler import _liveness
storage = store.open_storage(sys.argv[1], heartbeat_interval=1, grace_period=60)
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
ages = store.heartbeat_ages(storage, study._study_id)
_liveness.fail_stale_trials(study, storage)
print(json.dumps({"ages": ages, "states": {t._trial_id: t.state.name for t in study.get_trials()}}))
"""


def _python(code: str, *args: str, tz: str, pgtz: str | None = None) -> str:
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("PGTZ", "TZ")}
    env.update(TZ=tz, PYTHONPATH=str(_REPO), **({"PGTZ": pgtz} if pgtz else {}))
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=_REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.postgres
@pytest.mark.parametrize("server_tz, client_tz", [("America/Los_Angeles", "Asia/Kolkata"),
                                                  ("Asia/Kolkata", "America/Los_Angeles")])
def test_a_live_trial_is_kept_and_a_dead_one_failed_whatever_the_time_zones(
        own_pg_database, server_tz, client_tz):
    """The database's default time zone is one, the beating scheduler's (TZ and PGTZ) another;
    the sweeping scheduler runs with the server's."""
    import json
    url, admin = own_pg_database
    database = sqlalchemy.engine.make_url(url).database
    with admin.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone TO '{server_tz}'")
    live, dead = map(int, _python(_BEATING_SCHEDULER, url, "tz", tz=client_tz, pgtz=client_tz).split())
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:   # the dead trial's scheduler stopped beating 10 minutes ago
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = heartbeat - "
                                     "interval '10 minutes' WHERE trial_id = :id"), {"id": dead})
    engine.dispose()

    seen = json.loads(_python(_SWEEPING_SCHEDULER, url, "tz", tz=server_tz))
    assert 0 <= seen["ages"][str(live)] < 60
    assert 600 <= seen["ages"][str(dead)] < 660
    assert seen["states"] == {str(live): "RUNNING", str(dead): "FAIL"}


# --- 11. first runs racing to create the same store ---------------------------------------------

def _open_at_once(url: str, barrier, results) -> None:
    barrier.wait(60)
    try:
        storage = store.open_storage(url)
        study = store.create_or_load_study(storage, "first-run", ["minimize"])
        results.put(("ok", study._study_id))
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _open_concurrently(url: str, processes: int = 4) -> list[tuple[str, object]]:
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return outcomes


def test_four_first_runs_create_one_sqlite_store_together(tmp_path):
    outcomes = _open_concurrently(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
    assert len({study_id for _, study_id in outcomes}) == 1


@pytest.mark.postgres
def test_four_first_runs_create_one_postgresql_store_together(own_pg_database):
    url, _admin = own_pg_database
    outcomes = _open_concurrently(url)
    assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
    assert len({study_id for _, study_id in outcomes}) == 1


def _half_made_store(url: str) -> str:
    """A store caught while ``open_storage`` creates it: every table there, the version row not
    yet (what CI's poller made a starting ``autotune run`` see). Returns the missing row."""
    optuna.storages.RDBStorage(url).engine.dispose()
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    (version,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    con.execute("DELETE FROM alembic_version")
    con.commit()
    con.close()
    return version


def test_a_reader_that_meets_a_store_being_created_waits_for_its_creator(tmp_path, monkeypatch):
    import fcntl
    import threading

    from scheduler_tests import helpers

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    version = _half_made_store(url)
    at_the_lock, outcome = threading.Event(), {}
    flock = fcntl.flock

    def seen_flock(fd, operation):
        if operation == fcntl.LOCK_SH:               # the reader, about to wait for the creator
            at_the_lock.set()
        return flock(fd, operation)
    monkeypatch.setattr(fcntl, "flock", seen_flock)

    def read():
        try:
            outcome["reader"] = store.open_reader(url)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            outcome["error"] = exc

    with store._creation_lock(url):                   # the creator, midway
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        helpers.wait_until(lambda: at_the_lock.is_set() or not reader.is_alive(), 60, 0.01)
        # it waits for the creator instead of calling the store no study store
        assert at_the_lock.is_set() and reader.is_alive(), outcome
        con = sqlite3.connect(tmp_path / "fresh.db")
        con.execute("INSERT INTO alembic_version VALUES (?)", (version,))
        con.commit()
        con.close()
    reader.join(60)
    assert "error" not in outcome, outcome
    assert outcome["reader"].get_all_studies() == []


def test_a_half_made_store_nobody_is_creating_is_named_at_once_and_left_as_it_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'half.db'}"
    _half_made_store(url)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(store.StoreError, match="lacks Optuna's tables alembic_version"):
        store.open_reader(url)
    assert sorted(p.name for p in tmp_path.iterdir()) == before    # no lock file made


# --- 12. a dropped connection does not fail a trial ---------------------------------------------

def _cut_every_connection(admin: sqlalchemy.engine.Engine, database: str) -> int:
    with admin.connect() as conn:
        return len(conn.execute(sqlalchemy.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).fetchall())


@pytest.mark.postgres
@pytest.mark.slow   # 11-28 s on a shared 2-core machine
def test_connections_cut_mid_study_fail_no_trial_and_the_study_meets_its_budget(own_pg_database,
                                                                                tmp_path):
    """The scheduler and its two workers lose every connection to the database after each trial
    completes, while the next ones run; each trial's reports, heartbeats, claims and results ride
    it out. The trials go through a gate one at a time, so the cuts do not depend on timing."""
    import json

    from optuna.trial import TrialState
    from scheduler_tests import helpers

    url, admin = own_pg_database
    database, n_trials = sqlalchemy.engine.make_url(url).database, 8
    store.create_or_load_study(store.open_storage(url), "cut", ["minimize"])
    gate = tmp_path / "gate"                 # the trials go through one at a time, when let
    gate.mkdir()
    child = helpers.spawn_run(url, "cut", workers=2, trials=n_trials, steps=10, sleep_s=0.05,
                              gate=str(gate))
    cuts = 0
    try:
        for done in range(n_trials):   # let one trial through; once it completes, cut everything
            (gate / f"go-{done}").touch()
            helpers.wait_until(lambda done=done: child.poll() is not None
                               or helpers.count(url, "cut", TrialState.COMPLETE) > done, 120, 0.05)
            if child.poll() is not None:
                break
            if done < n_trials - 1:    # the other worker's trial waits at the gate, mid-trial
                cuts += _cut_every_connection(admin, database) > 0
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert cuts >= 3, (cuts, child.returncode)
    assert child.returncode == 0, err
    failed = [(t.number, t.user_attrs.get("fail_reason")) for t in helpers.trials(url, "cut")
              if t.state == TrialState.FAIL]
    assert json.loads(out.splitlines()[-1])["failed"] == 0, (failed, err[-4000:])
    states = [t.state for t in helpers.trials(url, "cut")]
    assert states.count(TrialState.COMPLETE) == n_trials
    assert TrialState.FAIL not in states


def _dropped() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_errors_caused_by_a_dropped_connection_are_retried_and_others_are_not():
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = _dropped()
    assert store.is_transient(_dropped()) and store.is_transient(wrapped)
    assert not store.is_transient(optuna.exceptions.StorageInternalError("bad data"))
    assert not store.is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE")))
    assert not store.is_transient(store.StorageUnavailable("gave up already"))
    assert "server closed the connection" in store_urls.first_error_line(wrapped)
    full = sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
    assert not store.is_transient(full)    # an OperationalError, but backoff does not free space
    wrapped_full = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped_full.__cause__ = full
    assert not store.is_transient(wrapped_full)


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate, transient", [("57P01", True), ("08006", True), ("08003", True),
                                                 ("57P03", True), ("23505", False), ("42P01", False)])
def test_a_lost_connection_raised_as_another_error_class_is_retried(sqlstate, transient):
    # A driver may raise a terminated backend (57P01) or a broken connection (08xxx) as a plain
    # DatabaseError; its SQLSTATE still says what happened.
    error = sqlalchemy.exc.DatabaseError("SELECT 1", {}, _DriverError(sqlstate))
    assert store.is_transient(error) is transient


def test_storage_methods_retry_then_fail_with_reason_storage(monkeypatch):
    monkeypatch.setattr(store_engine.time, "sleep", lambda _s: None)
    calls = []

    def set_attr(_storage, fail_times: int) -> str:   # a storage method whose connection drops
        calls.append(1)
        if len(calls) <= fail_times:
            raise _dropped()
        return "stored"

    retried = store_engine._retried(set_attr)
    assert retried(None, 2) == "stored" and len(calls) == 3
    calls.clear()
    with pytest.raises(store.StorageUnavailable, match="^storage: .*server closed the connection"):
        retried(None, 99)
    assert len(calls) == store.ATTEMPTS
    assert "record_heartbeat" in vars(store.RetryingRDBStorage)
    assert "create_new_trial" not in vars(store.RetryingRDBStorage)   # not idempotent


# --- 9. trials of dead schedulers: shown by status (which never writes), failed by the next run --

def _study_with_a_dead_schedulers_trial(url: str) -> tuple[optuna.Study, int]:
    """Two complete trials and one RUNNING whose scheduler (grace period 3 s) stopped beating
    10 minutes ago."""
    storage = store.open_storage(url, heartbeat_interval=1, grace_period=3)
    study = store.create_or_load_study(storage, "s", ["minimize"])
    study.optimize(lambda t: (t.suggest_float("x", -2, 2) - 0.5) ** 2, n_trials=2)
    orphan = study.ask()
    storage.set_trial_system_attr(orphan._trial_id, store.GRACE_ATTR, 3)
    storage.record_heartbeat(orphan._trial_id)
    with storage.engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = "
                                     "datetime(heartbeat, '-10 minutes') WHERE trial_id = :id"),
                     {"id": orphan._trial_id})
    return study, orphan.number


def test_status_shows_a_dead_schedulers_trial_as_stale_and_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    _study_with_a_dead_schedulers_trial(url)
    before = _digest(tmp_path / "stale.db")
    result = invoke("status", "--storage", url)
    assert result.exit_code == 0
    assert "3 trials (2 complete, 1 running)" in result.output
    assert re.search(r"1 running stale \(no heartbeat for 6\d\d s", result.output)
    assert _digest(tmp_path / "stale.db") == before


def test_a_run_fails_a_dead_schedulers_trial_even_when_the_budget_is_met(tmp_path):
    from optuna.trial import TrialState

    from autotune import scheduler
    from autotune.spec_types import BudgetSpec, ParallelSpec
    from scheduler_tests import objectives

    url = f"sqlite:///{tmp_path / 'stale.db'}"
    study, orphan = _study_with_a_dead_schedulers_trial(url)
    result = scheduler.run_study(
        study, storage_url=url, suggest=objectives.suggest_x,
        objective=objectives.Quadratic(url, "s"), parallel=ParallelSpec(gpus=0, workers=1),
        budget=BudgetSpec(trials=2))
    assert result.stopped_by == "trials" and result.completed == 0
    trial = optuna.load_study(study_name="s", storage=url).trials[orphan]
    assert trial.state == TrialState.FAIL
    assert re.match(r"no heartbeat for 6\d\ds", trial.user_attrs["fail_reason"])
    assert "running stale" not in invoke("status", "--storage", url).output
