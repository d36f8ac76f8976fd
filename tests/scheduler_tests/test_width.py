"""A searched trial width (issue 21 item 2): its value per trial, placing trials of mixed widths on
free slots, and the slots a study with a searched width plans."""
from __future__ import annotations

from autotune.scheduler import policies
from autotune.scheduler.gpus import plan_slots
from autotune.spec_types import ParallelSpec

SEARCHED = ParallelSpec(searched_width="gpus_per_trial", widest=4)


def test_a_trials_width_is_its_searched_value_else_the_fixed_one():
    assert policies.trial_width({"gpus_per_trial": 3, "lr": 0.1}, SEARCHED) == 3
    assert policies.trial_width({"lr": 0.1}, SEARCHED) == 1          # inactive (a condition)
    assert policies.trial_width({"gpus_per_trial": 3}, ParallelSpec(procs_per_trial=2)) == 2


def test_a_trial_is_placed_on_adjacent_free_slots_when_it_can_be():
    assert policies.place(1, [3, 1]) == (1,)
    assert policies.place(2, [0, 2, 3]) == (2, 3)
    assert policies.place(4, range(8)) == (0, 1, 2, 3)


def test_a_trial_wider_than_the_free_slots_waits_and_fragments_still_serve():
    assert policies.place(3, [0, 5]) is None
    assert policies.place(2, [0, 5]) == (0, 5)                   # not adjacent, but free
    assert policies.place(1, []) is None


def run_queue(widths: list[int], n_units: int) -> list[tuple[int, tuple[int, ...]]]:
    """The loop's hand-out rule, step by step: claim while slots are free, hold a trial that does
    not fit (claiming nothing more), and end the oldest running trial each step. Returns the
    ``(trial, slots)`` starts in order."""
    queue, running, held, starts = list(enumerate(widths)), [], None, []
    while queue or held is not None or running:
        while True:
            free = sorted(set(range(n_units)) - {u for _, units in running for u in units})
            if held is None:
                if not queue or not free:
                    break
                held = queue.pop(0)
            units = policies.place(held[1], free)
            if units is None:
                break
            running.append((held[0], units))
            starts.append((held[0], units))
            held = None
        if running:
            running.pop(0)
    return starts


def test_a_wide_trial_behind_narrow_ones_starts_before_any_later_trial():
    starts = run_queue([1, 1, 1, 4, 1, 1, 2, 3], n_units=4)
    order = [trial for trial, _ in starts]
    assert order == list(range(8))                  # nothing overtakes a held trial
    assert dict(starts)[3] == (0, 1, 2, 3)
    for trial, units in starts:
        assert len(units) == [1, 1, 1, 4, 1, 1, 2, 3][trial]


def test_no_slot_runs_two_trials_at_once_with_mixed_widths():
    widths = [2, 1, 3, 1, 1, 2, 4, 1, 2, 1]
    queue, running, held = list(enumerate(widths)), [], None
    while queue or held is not None or running:
        while True:
            busy = [u for _, units in running for u in units]
            assert len(busy) == len(set(busy)) and all(0 <= u < 4 for u in busy)
            free = sorted(set(range(4)) - set(busy))
            if held is None:
                if not queue:
                    break
                held = queue.pop(0)
            units = policies.place(widths[held[0]], free)
            if units is None:
                break
            running.append((held[0], units))
            held = None
        running.pop(0)


def test_a_searched_gpu_width_plans_one_slot_per_gpu():
    slots = plan_slots(SEARCHED, available=[str(i) for i in range(4)])
    assert [(s.index, s.gpu, s.share) for s in slots] == [(i, str(i), 1.0) for i in range(4)]


def test_a_searched_process_width_plans_one_slot_per_core(monkeypatch):
    monkeypatch.setattr("autotune.scheduler.gpus.usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spec = ParallelSpec(searched_width="procs_per_trial", widest=2, fit_cores=True)
    slots = plan_slots(spec, available=["0"])
    assert [(s.gpu, s.threads) for s in slots] == [(None, 1)] * 4
