"""The read-only commands' fast readers in store.py give what Optuna's own reads give: they reach
Optuna's tables directly (SQL through SQLAlchemy), so these tests pin them to Optuna's schema and
to Optuna's answers, on SQLite and on PostgreSQL, for trials of every state, interrupted trials,
``time_s``, infinite values and several objectives."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune import outcomes, store, store_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report_tests"))
from synthetic import build_study  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("own_pg_database")[0]


def _fill(url: str) -> None:
    """Two synthetic studies, and one of hand-made trials: interrupted, running, waiting, with
    ``time_s`` (malformed once), an infinite value."""
    storage = store.open_storage(url)
    build_study(storage, "single", 60, seed=1)
    build_study(storage, "double", 40, objectives=2, seed=2)
    study = optuna.create_study(storage=storage, study_name="odd")
    for i in range(8):
        trial = study.ask()
        trial.suggest_float("x", -1.0, 1.0)
        trial.report(float(i), step=i)
        trial.set_user_attr(outcomes.TIME_ATTR, {"train": 2.0 + i, "compile": 1.0, "total": 4.0 + i}
                            if i != 3 else "bad")
        if i == 2:
            trial.set_user_attr(outcomes.STOP_ATTR, outcomes.INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
        elif i == 4:
            study.tell(trial, state=TrialState.FAIL)
        elif i == 5:
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 6:
            continue   # left running
        else:
            study.tell(trial, float("-inf") if i == 1 else i / 10)
    study.enqueue_trial({"x": 0.5})


def test_read_trials_gives_what_optunas_load_gives(url):
    _fill(url)
    reader = store.open_reader(url)
    for frozen in reader.get_all_studies():
        ours = store.read_trials(reader, frozen._study_id)
        theirs = reader.get_all_trials(frozen._study_id, deepcopy=False)
        assert ours == theirs
        assert [t._trial_id for t in ours] == [t._trial_id for t in theirs]
        for a, b in zip(ours, theirs):   # dict order is export's column order
            assert list(a.params) == list(b.params)
            assert list(a.intermediate_values) == list(b.intermediate_values)
            if url.startswith("sqlite"):   # PostgreSQL gives Optuna's load no order
                assert list(a.user_attrs) == list(b.user_attrs)
        some = (TrialState.COMPLETE, TrialState.WAITING)
        assert store.read_trials(reader, frozen._study_id, some) == \
               reader.get_all_trials(frozen._study_id, deepcopy=False, states=some)


def test_summaries_from_two_queries_match_the_ones_from_every_trial(url):
    _fill(url)
    reader = store.open_reader(url)
    fast = store.summarize_studies(reader)
    plain = [store_summary._summary_from_trials(reader, s) for s in reader.get_all_studies()]
    assert [s.name for s in fast] == ["single", "double", "odd"]
    for a, b in zip(fast, plain):
        assert (a.name, a.directions, a.counts, a.best_values, a.n_trials, a.user_attrs, a.outcomes) == \
               (b.name, b.directions, b.counts, b.best_values, b.n_trials, b.user_attrs, b.outcomes)
        assert (a.time_shares is None) == (b.time_shares is None)
        for k in a.time_shares or {}:
            assert math.isclose(a.time_shares[k], b.time_shares[k])
        assert list(a.time_shares or {}) == list(b.time_shares or {})
    odd = fast[2]
    assert odd.outcomes == {"complete": 4, "pruned": 1, "failed": 1, "interrupted": 1, "running": 1,
                            "waiting": 1}
    assert odd.time_shares is not None


def test_the_pareto_front_of_trials_read_once_is_optunas_best_trials(url):
    _fill(url)
    reader = store.open_reader(url)
    study = optuna.load_study(study_name="double", storage=reader)
    ours = store.pareto_front(store.study_trials(study), study.directions)
    assert ours and [t.number for t in ours] == [t.number for t in study.best_trials]
