"""The scheduler's decisions, called directly: no process, no store, no clock."""
from __future__ import annotations

import pytest

from autotune.scheduler import policies
from autotune.scheduler.policies import SlotState


# --- the budget -------------------------------------------------------------------------------
def test_no_budget_is_spent_before_its_limits():
    assert policies.budget_spent(59.9, 60.0, 7199.0, 2.0) is None
    assert policies.budget_spent(1e9, None, 1e9, None) is None        # no limits: never spent


def test_the_wall_time_budget_is_spent_at_its_timeout():
    assert policies.budget_spent(60.0, 60.0, 0.0, None) == "timeout"


def test_the_gpu_hours_budget_counts_seconds_against_hours():
    assert policies.budget_spent(1.0, None, 1.5 * 3600, 1.5) == "gpu_hours"
    assert policies.budget_spent(1.0, None, 1.5 * 3600 - 1, 1.5) is None


def test_the_timeout_is_named_first_when_both_are_spent():
    assert policies.budget_spent(60.0, 60.0, 1e9, 1.0) == "timeout"


@pytest.mark.parametrize("finished,wanted,spent", [(9, 10, False), (10, 10, True), (11, 10, True),
                                                   (10_000, None, False)])
def test_the_trials_budget_counts_finished_trials(finished, wanted, spent):
    assert policies.trials_spent(finished, wanted) is spent


@pytest.mark.parametrize("finished,running,wanted,decision", [
    (0, 0, 10, "claim"),
    (7, 2, 10, "claim"),
    (7, 3, 10, "wait"),       # the last three run elsewhere; one may fail and need a rerun
    (8, 5, 10, "wait"),
    (10, 0, 10, "trials"),    # met: the run stops handing out trials
    (10, 4, 10, "trials"),
    (500, 16, None, "claim"),  # no trials budget: always claim
])
def test_a_claim_is_made_only_while_the_budget_has_room_for_it(finished, running, wanted, decision):
    assert policies.claim_decision(finished, running, wanted) == decision


# --- slots ------------------------------------------------------------------------------------
def test_the_next_trials_go_to_idle_ready_live_slots_lowest_index_first():
    slots = [SlotState(3, busy=False, ready=True, alive=True),
             SlotState(0, busy=True, ready=True, alive=True),      # runs a trial
             SlotState(1, busy=False, ready=False, alive=True),    # still starting
             SlotState(2, busy=False, ready=True, alive=False),    # died: its exit is handled first
             SlotState(4, busy=False, ready=True, alive=True)]
    assert policies.free_slots(slots) == [3, 4]


def test_no_slot_is_free_while_every_one_is_busy_or_starting():
    assert policies.free_slots([SlotState(0, True, True, True), SlotState(1, False, False, True)]) == []
    assert policies.free_slots([]) == []


def test_a_slot_is_given_up_after_three_workers_die_while_starting():
    assert [policies.slot_broken(n) for n in range(5)] == [False, False, False, True, True]
    assert policies.MAX_START_FAILURES == 3


# --- failures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("retries_so_far,max_retries,retried", [
    (0, 0, False), (0, 1, True), (1, 1, False), (1, 2, True), (2, 2, False)])
def test_a_trial_whose_worker_died_is_retried_at_most_max_retries_times(retries_so_far, max_retries,
                                                                         retried):
    assert policies.may_retry(retries_so_far, max_retries) is retried


def test_a_trial_is_stale_only_past_its_own_schedulers_grace_period():
    assert not policies.is_stale(30.0, 30.0)
    assert policies.is_stale(30.5, 30.0)
    assert not policies.is_stale(1e9, None)     # a scheduler without heartbeats: never stale


def test_a_finished_trial_that_did_not_fail_ends_the_failure_streak():
    streak = 0
    for failed in (True, True, True):
        streak = policies.failure_streak(streak, failed)
    assert streak == 3
    assert policies.failure_streak(streak, False) == 0


def test_ten_failures_in_a_row_stop_a_run_of_few_slots_and_three_per_slot_a_large_one():
    assert not policies.too_many_failures(policies.FAILURE_STREAK - 1, 2)
    assert policies.too_many_failures(policies.FAILURE_STREAK, 2)
    assert policies.failure_limit(8) == 24
    assert not policies.too_many_failures(23, 8) and policies.too_many_failures(24, 8)


# --- time -------------------------------------------------------------------------------------
def test_a_trials_slot_time_splits_into_the_workers_parts_and_the_handoff():
    split = policies.slot_time_split({"train": 7.0, "eval": 1.5, "teardown": 0.25}, 10.0)
    assert split == {"train": 7.0, "eval": 1.5, "teardown": 0.25, "handoff": 1.25, "total": 10.0}
    assert sum(v for k, v in split.items() if k != "total") == pytest.approx(split["total"])


def test_a_worker_that_said_nothing_leaves_its_slot_time_unaccounted():
    assert policies.slot_time_split(None, 4.0) == {"unaccounted": 4.0, "total": 4.0}


def test_the_handoff_is_never_negative_when_the_worker_counted_more_than_the_slot():
    split = policies.slot_time_split({"objective": 5.0, "total": 99.0, "handoff": 3.0}, 4.0)
    assert split == {"objective": 5.0, "handoff": 0.0, "total": 4.0}   # its own total/handoff ignored
