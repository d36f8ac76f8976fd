"""bench/suggest_speed.py (suggestion time at 1,000 finished trials, a timing kept out of the unit
tests): its study holds the trials it says, each kind proposes in the space, and the table and JSON
carry every figure."""
from __future__ import annotations

import json
import statistics

from tests.bench_scripts import load_bench


def test_each_kind_proposes_within_the_space_of_a_filled_store_and_the_run_writes_its_figures(tmp_path, capsys):
    bench = load_bench("suggest_speed")
    out = tmp_path / "s.json"
    assert bench.main(["--trials", "30", "--asks", "3", "--kinds", "evolution", "hybrid",
                       "--db-dir", str(tmp_path), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["kind"] for r in rows] == ["evolution", "hybrid"]
    for r in rows:
        assert r["trials"] == 30 and len(r["asks_s"]) == 3 and r["first_ask_s"] == r["asks_s"][0]
        assert r["median_next_s"] == statistics.median(r["asks_s"][1:]) and r["fill_s"] > 0
    table = capsys.readouterr().out
    assert "| evolution | 30 |" in table and "| hybrid | 30 |" in table


def test_the_filled_trials_are_finished_and_valued_as_documented():
    bench = load_bench("suggest_speed")
    trials = bench.finished_trials(5, seed=1)
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        expected = sum(v ** 2 for k, v in t.params.items() if k.startswith("x")) + t.params["n"]
        assert t.value == expected and set(t.params) == set(bench.SPACE)
