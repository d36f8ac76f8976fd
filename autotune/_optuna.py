"""Optuna's internals that autotune relies on, in one place: each private name behind one small
function, and every query on Optuna's own tables.

Owns: reading private attributes (``study._study_id``, ``trial._trial_id``, ``study._storage`` and
the cache wrapped around it), the trial hook that Optuna's samplers read through
(``Study._get_trials``), ``BaseDistribution._contains``, Optuna's Pareto front and hypervolume
functions, and SQL on the tables of ``RDBStorage`` (``trials``, ``trial_user_attributes``,
``trial_heartbeats``, ...; through ``optuna.storages._rdb.models`` where a read must convert values
as Optuna does). tests/test_optuna_internals.py pins the behaviour each one relies on, so that an
Optuna release that changes one breaks that file, loudly. The hybrid sampler's use of
``optuna._gp`` stays in autotune/samplers/hybrid.py; the same test file pins it.
Must not know about: the model, the scheduler, study files.
"""
from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from typing import Any, Container, Iterable, Sequence

import numpy as np
import optuna
import sqlalchemy
from optuna._hypervolume import compute_hypervolume
from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState

from autotune import outcomes


# --- private attributes -----------------------------------------------------------------------

def study_id_of(study: optuna.Study | optuna.study.FrozenStudy) -> int:
    """The storage's id of ``study`` (``storage.get_study_id_from_name(study.study_name)``,
    without the query)."""
    return study._study_id


def trial_id_of(trial: optuna.trial.BaseTrial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (a live Trial or a FrozenTrial); not its ``number``."""
    return trial._trial_id


def set_trial_id(trial: FrozenTrial, value: int) -> None:
    """Give a FrozenTrial built outside any storage the id ``value`` (-1: a warm-start source)."""
    trial._trial_id = value


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes through (the cached wrapper of an RDB store)."""
    return study._storage


def backend_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind ``study``, past the cache that ``load_study`` wraps around an RDB
    store (a one-off read gains nothing from it)."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def study_trials_cached(study: optuna.Study, states: Iterable[TrialState] | None = None,
                        *, use_cache: bool) -> list[FrozenTrial]:
    """``study.get_trials(deepcopy=False, states=states)``; with ``use_cache`` through the study's
    per-thread cache of all trials, as Optuna's own samplers read them within one trial."""
    return study._get_trials(deepcopy=False, states=states, use_cache=use_cache)


# Optuna's samplers read a study's trials through this method (``Study._get_trials(deepcopy,
# states, use_cache)``); a Study subclass that shows samplers other trials (the warm start's
# prior view, the report's snapshot) overrides it.
TRIALS_HOOK = "_get_trials"


class StudyView:
    """A study as a sampler sees it: the real study (storage, directions, attributes, which
    samplers may write) except the trials it lists: the study's own, through ``_shown``, which a
    subclass overrides (the warm start's prior view adds source trials; the GP's view shows pruned
    trials as complete). Samplers list them through ``_get_trials``, the hook above."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _shown(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """The trials samplers see, given the study's own (every state, not copied)."""
        return trials

    # Optuna's samplers read trials through this private hook (TRIALS_HOOK, pinned there)
    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [t for t in self._shown(study_trials_cached(self._study, use_cache=use_cache))
                  if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trials(self, deepcopy: bool = True,
                   states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a member of ``dist`` (in its range, on its grid, one of its choices)."""
    try:
        return dist._contains(dist.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume of ``points`` (to minimize, each below ``reference``)."""
    return float(compute_hypervolume(points, reference))


def pareto_front(trials: Sequence[optuna.trial.FrozenTrial],
                 directions: Sequence[optuna.study.StudyDirection]) -> list[optuna.trial.FrozenTrial]:
    """``study.best_trials`` of trials already read (Optuna's property reads them twice more);
    Optuna's own functions, which tests/store_tests pin against the property."""
    return _get_pareto_front_trials_by_trials(
        trials, directions, consider_constraint=any(t.constraints for t in trials))



# --- Optuna's tables ---------------------------------------------------------------------------

# What Optuna's RDBStorage would create (and write a version row into) when missing.
OPTUNA_TABLES = ("studies", "trials", "version_info", "alembic_version")


def missing_optuna_tables(engine: sqlalchemy.engine.Engine) -> tuple[list[str], set[str]]:
    """The tables of an Optuna study store that the database lacks (none when it is one; a
    version table without its row counts as missing), and the tables it has."""
    with engine.connect() as conn:
        have = set(sqlalchemy.inspect(conn).get_table_names())
        missing = [t for t in OPTUNA_TABLES if t not in have]
        for table in ("version_info", "alembic_version"):
            if table in have and conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 0:
                missing.append(table)
        conn.rollback()
    return missing, have


@dataclass(frozen=True)
class TrialCounts:
    """Trials of one study by state; ``running`` counts only trials that have a heartbeat."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    waiting: int = 0
    running: int = 0
    running_without_heartbeat: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def count_trials(storage: optuna.storages.RDBStorage, study_id: int) -> TrialCounts:
    """Count a study's trials in one query (cheap enough to run before every claim)."""
    sql = sqlalchemy.text(
        "SELECT t.state, COUNT(*), SUM(CASE WHEN EXISTS (SELECT 1 FROM trial_heartbeats h "
        "WHERE h.trial_id = t.trial_id) THEN 1 ELSE 0 END) "
        "FROM trials t WHERE t.study_id = :sid GROUP BY t.state")
    with storage.engine.connect() as conn:
        rows = conn.execute(sql, {"sid": study_id}).fetchall()
    by_state = {str(state).split(".")[-1]: (int(n), int(hb or 0)) for state, n, hb in rows}
    running, with_heartbeat = by_state.get("RUNNING", (0, 0))
    return TrialCounts(
        complete=by_state.get("COMPLETE", (0, 0))[0], pruned=by_state.get("PRUNED", (0, 0))[0],
        failed=by_state.get("FAIL", (0, 0))[0], waiting=by_state.get("WAITING", (0, 0))[0],
        running=with_heartbeat, running_without_heartbeat=running - with_heartbeat)


def heartbeat_ages(storage: optuna.storages.RDBStorage, study_id: int) -> dict[int, float]:
    """Seconds since the last heartbeat of each RUNNING trial that has one, by trial id
    (measured on the database's clock, like Optuna's own stale check)."""
    sql = sqlalchemy.text(
        "SELECT t.trial_id, h.heartbeat FROM trials t JOIN trial_heartbeats h "
        "ON h.trial_id = t.trial_id WHERE t.study_id = :sid AND t.state = 'RUNNING'"
    ).columns(trial_id=sqlalchemy.Integer, heartbeat=sqlalchemy.DateTime)
    with storage.engine.connect() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = conn.execute(sql, {"sid": study_id}).fetchall()
    if now.tzinfo is not None:   # heartbeats are stored as UTC wall time (see the PostgreSQL hooks)
        now = now.astimezone(datetime.timezone.utc)
    now = now.replace(tzinfo=None)
    return {int(tid): (now - beat.replace(tzinfo=None)).total_seconds() for tid, beat in rows}


def trial_user_attr_json(storage: optuna.storages.RDBStorage, study_id: int, key: str,
                         states: Iterable[optuna.trial.TrialState] | None = None) -> list[Any]:
    """A user attribute of every trial of a study (of those in ``states`` only, if given) that
    carries it, decoded from JSON, in one query (no whole trials loaded)."""
    sql = ("SELECT a.value_json FROM trial_user_attributes a JOIN trials t ON t.trial_id = a.trial_id "
           "WHERE t.study_id = :sid AND a.key = :key")
    args: dict[str, Any] = {"sid": study_id, "key": key}
    if states is not None:
        names = [s.name for s in states]
        sql += " AND t.state IN (" + ", ".join(f":state{i}" for i in range(len(names))) + ")"
        args.update({f"state{i}": name for i, name in enumerate(names)})
    with storage.engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(sql), args).fetchall()
    values = []
    for (value_json,) in rows:
        try:
            values.append(json.loads(value_json))
        except (TypeError, ValueError):
            pass
    return values


def trial_tallies(storage: optuna.storages.RDBStorage
                   ) -> dict[int, tuple[dict[str, int], dict[str, int], list[dict[str, float] | None]]]:
    """By study id: trials by state, trials by outcome, and the ``time_s`` parts of the finished
    trials (in trial order), from Optuna's ``trials`` and ``trial_user_attributes`` tables (interrupted
    and out-of-memory trials told apart by their ``stop_reason`` / ``infeasible`` attributes); user
    attributes are stored as ``json.dumps(value)``."""
    by_state = sqlalchemy.text(
        "SELECT t.study_id, t.state, COUNT(*), "
        "SUM(CASE WHEN a.value_json = :interrupted THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN b.value_json = :oom THEN 1 ELSE 0 END) "
        "FROM trials t LEFT JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = :stop_key "
        "LEFT JOIN trial_user_attributes b ON b.trial_id = t.trial_id AND b.key = :infeasible_key "
        "GROUP BY t.study_id, t.state")
    times = sqlalchemy.text(
        "SELECT t.study_id, a.value_json FROM trial_user_attributes a JOIN trials t "
        "ON t.trial_id = a.trial_id WHERE a.key = :time_key "
        "AND t.state IN ('COMPLETE', 'PRUNED', 'FAIL') ORDER BY t.trial_id")
    with storage.engine.connect() as conn:
        state_rows = conn.execute(by_state, {"interrupted": json.dumps(outcomes.INTERRUPTED),
                                             "stop_key": outcomes.STOP_ATTR,
                                             "oom": json.dumps(outcomes.OOM),
                                             "infeasible_key": outcomes.INFEASIBLE_ATTR}).fetchall()
        time_rows = conn.execute(times, {"time_key": outcomes.TIME_ATTR}).fetchall()
    tallies: dict[int, tuple[dict[str, int], dict[str, int], list]] = {}
    for study_id, state, n, interrupted, oom in state_rows:
        counts, by_outcome, _ = tallies.setdefault(int(study_id), ({}, {}, []))
        name = str(state).split(".")[-1]
        counts[name] = int(n)
        if name == "FAIL":
            by_outcome[outcomes.INTERRUPTED] = int(interrupted or 0)
            by_outcome["failed"] = int(n) - int(interrupted or 0)
        elif name == "COMPLETE":
            by_outcome[outcomes.OUT_OF_MEMORY] = int(oom or 0)
            by_outcome["complete"] = int(n) - int(oom or 0)
        else:
            by_outcome[name.lower()] = int(n)
    for study_id, value_json in time_rows:
        try:
            raw = json.loads(value_json)
        except ValueError:
            raw = None
        tallies.setdefault(int(study_id), ({}, {}, []))[2].append(outcomes.parse_time_parts(raw))
    return tallies


def study_trials(study: optuna.Study, states: Sequence[optuna.trial.TrialState] | None = None
                 ) -> list[optuna.trial.FrozenTrial]:
    """``study.get_trials(deepcopy=False)`` through ``read_trials`` (past Optuna's cache, which
    ``load_study`` wraps around an RDB store and which a one-off read gains nothing from)."""
    return read_trials(backend_storage(study), study_id_of(study), states)


def read_trials(storage: optuna.storages.BaseStorage, study_id: int,
                states: Sequence[optuna.trial.TrialState] | None = None) -> list[optuna.trial.FrozenTrial]:
    """Every trial of a study (in ``states`` only, if given), as ``storage.get_all_trials(study_id,
    deepcopy=False, states=states)`` returns them, for the read-only commands.

    On an RDB store: one plain query per Optuna table (SQLAlchemy Core on Optuna's own table
    objects, so that states, datetimes and values convert as Optuna converts them), each
    distribution parsed once. Optuna's ORM load took 9 s of 5,000 trials on a loaded 2-core VM;
    tests/store_tests pin this against ``get_all_trials``. Other storages: ``get_all_trials``."""
    if not isinstance(storage, optuna.storages.RDBStorage):
        return storage.get_all_trials(study_id, deepcopy=False, states=states)
    trial_table = models.TrialModel.__table__
    in_study = trial_table.c.study_id == study_id
    if states is not None:
        in_study = in_study & trial_table.c.state.in_(list(states))
    of_study = sqlalchemy.select(trial_table.c.trial_id).where(in_study)

    def rows(model: Any, *columns: str, order: str) -> list[Any]:
        """``columns`` of the study's rows in ``model``'s table, by trial then ``order``: the
        order Optuna's load gives on SQLite (its unique index on trial and key or step; params
        sorted by id), which the dicts keep and ``export`` shows as column order."""
        table = model.__table__
        query = (sqlalchemy.select(*(table.c[c] for c in columns))
                 .where(table.c.trial_id.in_(of_study)).order_by(table.c.trial_id, table.c[order]))
        return conn.execute(query).fetchall()

    with storage.engine.connect() as conn:
        trial_rows = conn.execute(
            sqlalchemy.select(trial_table.c.trial_id, trial_table.c.number, trial_table.c.state,
                              trial_table.c.datetime_start, trial_table.c.datetime_complete)
            .where(in_study).order_by(trial_table.c.trial_id)).fetchall()
        values = rows(models.TrialValueModel, "trial_id", "objective", "value", "value_type",
                      order="objective")
        params = rows(models.TrialParamModel, "trial_id", "param_name", "param_value", "distribution_json",
                      order="param_id")
        steps = rows(models.TrialIntermediateValueModel, "trial_id", "step", "intermediate_value",
                     "intermediate_value_type", order="step")
        user = rows(models.TrialUserAttributeModel, "trial_id", "key", "value_json", order="key")
        system = rows(models.TrialSystemAttributeModel, "trial_id", "key", "value_json", order="key")
    by_trial: dict[int, dict[str, Any]] = {
        tid: {"values": {}, "params": {}, "distributions": {}, "steps": {}, "user": {}, "system": {}}
        for tid, *_ in trial_rows}
    for tid, objective, value, value_type in values:
        by_trial[tid]["values"][objective] = models.TrialValueModel.stored_repr_to_value(value, value_type)
    parsed: dict[str, optuna.distributions.BaseDistribution] = {}
    for tid, name, value, dist_json in params:
        dist = parsed.get(dist_json) or parsed.setdefault(
            dist_json, optuna.distributions.json_to_distribution(dist_json))
        by_trial[tid]["params"][name] = dist.to_external_repr(value)
        by_trial[tid]["distributions"][name] = dist
    for tid, step, value, value_type in steps:
        by_trial[tid]["steps"][step] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
            value, value_type)
    for tid, key, value_json in user:
        by_trial[tid]["user"][key] = json.loads(value_json)
    for tid, key, value_json in system:
        by_trial[tid]["system"][key] = json.loads(value_json)
    out = []
    for tid, number, state, start, complete in trial_rows:
        t = by_trial[tid]
        out.append(optuna.trial.FrozenTrial(
            number=number, state=state, value=None,
            values=[t["values"][i] for i in sorted(t["values"])] if t["values"] else None,
            datetime_start=start, datetime_complete=complete, params=t["params"],
            distributions=t["distributions"], user_attrs=t["user"], system_attrs=t["system"],
            intermediate_values=t["steps"], trial_id=tid))
    return out
