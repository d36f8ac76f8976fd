"""What a finished trial means to a user: interrupted or failed, and where its time went."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from autotune import outcomes


def timed(state=TrialState.COMPLETE, **time_s) -> optuna.trial.FrozenTrial:
    return create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None,
                        user_attrs={"time_s": time_s} if time_s else {})


def test_shares_are_of_the_summed_totals_largest_first():
    shares = outcomes.time_shares([timed(train=6, compile=3, eval=1, total=10),
                                   timed(train=10, total=10), timed()])
    assert shares == pytest.approx({"train": 0.8, "compile": 0.15, "eval": 0.05})
    assert list(shares) == ["train", "compile", "eval"]


def test_a_trial_without_total_counts_its_parts_and_bad_values_are_skipped():
    shares = outcomes.time_shares([timed(train=3, other=1), timed(train="?", setup=-1, total=0)])
    assert shares == pytest.approx({"train": 0.75, "other": 0.25})


def test_no_share_without_finished_timed_trials():
    assert outcomes.time_shares([timed(), timed(TrialState.RUNNING, train=1, total=1)]) is None
    assert outcomes.time_line(None) is None


def test_the_status_line_names_the_largest_overhead():
    line = outcomes.time_line({"train": 0.62, "compile": 0.30, "eval": 0.08})
    assert line == "time in training steps: 62 % (largest overhead: compile 30 %)"
    assert outcomes.time_line({"train": 1.0}) == "time in training steps: 100 %"


def test_an_interrupted_trial_is_neither_failed_nor_counted_as_such():
    cut = create_trial(state=TrialState.FAIL, user_attrs={"stop_reason": "interrupted"})
    broke = create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"})
    done = create_trial(state=TrialState.COMPLETE, value=1.0)
    assert [outcomes.outcome(t) for t in (cut, broke, done)] == ["interrupted", "failed", "complete"]
    assert outcomes.outcome_counts([cut, broke, done, cut]) == {"complete": 1, "failed": 1, "interrupted": 2}
    assert outcomes.failed_on_their_own([cut, broke, done]) == [broke]
