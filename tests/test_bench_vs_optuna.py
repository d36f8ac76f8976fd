"""bench/vs_optuna.py's arithmetic: what each side did in the same window (issue 15)."""
from __future__ import annotations

from tests.bench_scripts import load_bench


def _row(number, slot, state, start, end, train_s, steps, tokens, value=None):
    return {"number": number, "slot": slot, "state": state, "start": start, "end": end,
            "total_s": end - start, "train_s": train_s, "parts": {"train": train_s, "setup": 0.1},
            "steps": steps, "tokens": tokens, "value": value}


def test_the_window_counts_trials_steps_and_tokens_finished_in_it():
    vs = load_bench("vs_optuna")
    rows = [_row(0, 0, "COMPLETE", 0.0, 5.0, 4.5, 400.0, 4.0e6, value=1.5),
            _row(1, 1, "PRUNED", 0.0, 2.0, 1.5, 100.0, 1.0e6),
            _row(2, 1, "PRUNED", 2.0, 4.0, 1.5, 100.0, 1.0e6),
            _row(3, 0, "COMPLETE", 5.0, 12.0, 6.0, 400.0, 4.0e6, value=0.5)]   # ends after the window
    out = vs.summarize(rows, wall_s=12.0, window_s=10.0)
    assert (out["trials_finished"], out["trials_complete"], out["finished_after_window"]) == (3, 1, 1)
    assert out["steps_per_s"] == 60.0 and out["tokens_per_s"] == 600_000
    assert out["median_overhead_s_after_first"] == 0.75   # trials 2 and 3: 0.5 and 1.0 s outside steps
    assert out["best"] == 0.5 and out["share_in_steps"] == round(13.5 / 16.0, 4)
