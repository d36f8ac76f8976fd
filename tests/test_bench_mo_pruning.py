"""bench/mo_pruning.py: its synthetic curves, its hypervolume, and its quick path (tiny sizes)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def mo():
    return load_bench("mo_pruning")


PARAMS = {"width": 256, "depth": 4, "lr": 3e-3, "dropout": 0.1, "noise_seed": 0,
          "steps": 50, "eval_every": 10}


def test_the_curve_reports_every_eval_every_steps_and_the_configuration_fixes_latency(mo):
    seen = []
    result = mo.curves.learning_curve(PARAMS, lambda step, m: seen.append((step, dict(m))) or True)
    assert [s for s, _ in seen] == [10, 20, 30, 40, 50]
    assert {m["latency_ms"] for _, m in seen} == {mo.curves.latency_ms(256, 4)} == {result["latency_ms"]}
    assert result["steps_trained"] == 50 and result["val_loss"] == seen[-1][1]["val_loss"]
    assert seen[0][1]["val_loss"] > seen[-1][1]["val_loss"]


def test_the_curve_stops_where_it_was_told_and_says_how_many_steps_it_trained(mo):
    result = mo.curves.learning_curve(PARAMS, lambda step, m: step < 20)
    assert result["steps_trained"] == 20


def test_noise_is_fixed_by_configuration_and_noise_seed(mo):
    def losses(params):
        out = []
        mo.curves.learning_curve(params, lambda step, m: out.append(m["val_loss"]) or True)
        return out
    assert losses(PARAMS) == losses(dict(PARAMS))
    assert losses(PARAMS) != losses({**PARAMS, "noise_seed": 1})


def test_bigger_models_end_lower_but_cost_more_latency(mo):
    small = {**PARAMS, "width": 64, "depth": 2, "lr": 1e-2}
    large = {**PARAMS, "width": 1024, "depth": 12, "lr": 10 ** (-2.8)}
    assert mo.curves.noise_free_loss(large, 300) < mo.curves.noise_free_loss(small, 300)
    assert mo.curves.latency_ms(1024, 12) > mo.curves.latency_ms(64, 2)


def test_hypervolume_is_scaled_to_the_unit_box_against_the_fixed_reference(mo):
    assert mo.hypervolume([mo.LOW]) == pytest.approx(1.0)
    assert mo.hypervolume([mo.REFERENCE + 1]) == 0.0
    mid = mo.LOW + (mo.REFERENCE - mo.LOW) / 2
    assert mo.hypervolume([mid, mo.REFERENCE + 1]) == pytest.approx(0.25)


def test_hypervolume_at_equal_steps_counts_only_trials_finished_within_them(mo):
    mid = (mo.LOW + (mo.REFERENCE - mo.LOW) / 2).tolist()
    timeline = [(100, mid), (150, None), (250, mo.LOW.tolist())]
    assert mo.hv_at_steps(timeline, 200) == pytest.approx(0.25)
    assert mo.hv_at_steps(timeline, 250) == pytest.approx(1.0)


def test_the_front_keeps_only_non_dominated_points(mo):
    points = np.array([[1.0, 5.0], [2.0, 1.0], [2.0, 6.0], [1.5, 5.0]])
    assert sorted(map(tuple, mo._front(points))) == [(1.0, 5.0), (2.0, 1.0)]


def test_the_quick_path_writes_every_rule_and_pruning_trains_fewer_steps(mo, tmp_path):
    out = tmp_path / "mo.json"
    mo.main(["--quick", "--seeds", "1", "--trials", "14", "--steps", "40", "--eval-every", "5",
             "--work-units", "0", "--startup-trials", "4", "--workdir", str(tmp_path / "w"),
             "--out", str(out)])
    report = json.loads(out.read_text())
    assert {"command", "date", "machine", "config", "hv_true", "runs", "summary"} <= set(report)
    assert [r["rule"] for r in report["runs"]] == ["none", "median", "percentile-75", "pareto"]
    for run in report["runs"]:
        assert run["trials"] == 14 and run["failed"] == 0
        assert run["complete"] + run["pruned"] == 14 and 0 <= run["hv"] <= report["hv_true"]
    none, median = (next(r for r in report["runs"] if r["rule"] == rule) for rule in ("none", "median"))
    assert none["pruned"] == 0 and none["steps"] == 14 * 40
    assert median["pruned"] > 0 and median["steps"] < none["steps"]
    pareto = next(r for r in report["runs"] if r["rule"] == "pareto")
    assert pareto["steps"] <= none["steps"] and 0 <= pareto["pruned_fast_share"] <= 1
    assert none["fastest_complete_ms"] > 0
    summary = report["summary"]["median"]
    assert {"steps", "hv", "hv_of_true", "wall_s", "steps_vs_none", "hv_vs_none",
            "none_hv_at_equal_steps", "hv_vs_none_at_equal_steps"} <= set(summary)
    assert summary["steps_vs_none"]["mean"] < 1.0
