"""Where a trial's slot time went: the worker's parts, its warm-up for a slot's first trial, the rest."""
from __future__ import annotations

import pytest

from autotune.scheduler.policies import slot_time_split


def test_the_parts_and_the_handoff_sum_to_the_slot_time():
    split = slot_time_split({"setup": 1.0, "train": 6.0, "teardown": 0.5}, 8.0)
    assert split == {"setup": 1.0, "train": 6.0, "teardown": 0.5, "handoff": 0.5, "total": 8.0}


def test_a_worker_start_longer_than_the_trial_waited_is_cut_to_what_it_waited():
    # the worker began warming up before the trial was handed out: only the overlap is this trial's
    split = slot_time_split({"setup": 1.0, "train": 6.0, "worker_start": 5.0}, 10.0)
    assert split["worker_start"] == 3.0 and split["handoff"] == 0.0
    assert sum(v for k, v in split.items() if k != "total") == pytest.approx(split["total"])


def test_a_killed_worker_leaves_all_of_it_unaccounted():
    assert slot_time_split(None, 4.0) == {"unaccounted": 4.0, "total": 4.0}
