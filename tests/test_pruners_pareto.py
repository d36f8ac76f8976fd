"""The rung-wise Pareto pruner (``kind: pareto``): its pure rule on fresh random fronts, and the
study-file checks around it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from autotune.pruners import dominators, judged_metrics, prune_on_front
from autotune.spec import SpecError, load_spec
from autotune.spec_schema import study_schema
from autotune.spec_types import PrunerSpec
from tests.schema_check import errors

TWO = {"val_loss": "minimize", "latency_ms": "minimize"}
SPEC = PrunerSpec(kind="pareto", startup_trials=1, dominated_by=0.25)


def reports(step, **metrics):
    return [(step, metrics)]


def peers_at(step, points):
    return [reports(step, val_loss=float(a), latency_ms=float(b)) for a, b in points]


def dominators_by_loop(point, peers, minimize):
    count = 0
    for q in peers:
        better = [(qi < pi) if low else (qi > pi) for qi, pi, low in zip(q, point, minimize)]
        worse = [(qi > pi) if low else (qi < pi) for qi, pi, low in zip(q, point, minimize)]
        count += any(better) and not any(worse)
    return count


@pytest.mark.parametrize("seed", range(20))
def test_dominators_match_a_plain_loop_on_random_points_with_ties(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    peers = rng.integers(0, 4, size=(int(rng.integers(1, 30)), k)).astype(float)   # many ties
    point = rng.integers(0, 4, size=k).astype(float)
    minimize = [bool(b) for b in rng.integers(0, 2, size=k)]
    assert dominators(point, peers, minimize) == dominators_by_loop(point, peers, minimize)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("share", [0.01, 0.25, 1.0])
def test_a_trial_on_the_peers_front_is_never_pruned(seed, share):
    rng = np.random.default_rng(1000 + seed)
    points = rng.random((int(rng.integers(2, 40)), 2))
    front = [p for p in points if dominators(p, points, [True, True]) == 0]
    trial = front[int(rng.integers(len(front)))]
    others = peers_at(7, [p for p in points if p is not trial])
    spec = PrunerSpec(kind="pareto", startup_trials=1, dominated_by=share)
    assert not prune_on_front(spec, reports(7, val_loss=trial[0], latency_ms=trial[1]), others, TWO)


@pytest.mark.parametrize("seed", range(30))
def test_a_trial_that_most_peers_dominate_is_pruned(seed):
    rng = np.random.default_rng(2000 + seed)
    points = rng.random((int(rng.integers(4, 40)), 2))
    worst = points.max(axis=0) + rng.random(2)          # every peer dominates it
    assert prune_on_front(SPEC, reports(7, val_loss=worst[0], latency_ms=worst[1]), peers_at(7, points), TWO)


def test_it_prunes_exactly_when_the_dominating_share_reaches_dominated_by():
    others = peers_at(5, [(1, 1), (1, 1), (3, 3), (3, 3)])
    trial = reports(5, val_loss=2, latency_ms=2)          # dominated by 2 of 4 peers
    assert prune_on_front(PrunerSpec(kind="pareto", startup_trials=1, dominated_by=0.5), trial, others, TWO)
    assert not prune_on_front(PrunerSpec(kind="pareto", startup_trials=1, dominated_by=0.75), trial, others, TWO)


def test_the_fastest_trial_survives_where_a_rule_on_val_loss_alone_would_stop_it():
    others = peers_at(5, [(1.0, 5.0), (1.1, 6.0), (1.2, 4.0), (1.0, 9.0)])
    fast_but_worse = reports(5, val_loss=2.0, latency_ms=0.5)
    assert not prune_on_front(SPEC, fast_but_worse, others, TWO)
    assert prune_on_front(SPEC, reports(5, val_loss=2.0, latency_ms=7.0), others, TWO)


def test_a_maximized_objective_is_judged_the_other_way_round():
    d = {"val_loss": "minimize", "accuracy": "maximize"}
    others = [reports(3, val_loss=1.0, accuracy=0.9)] * 4
    assert prune_on_front(SPEC, reports(3, val_loss=2.0, accuracy=0.5), others, d)
    assert not prune_on_front(SPEC, reports(3, val_loss=2.0, accuracy=0.95), others, d)


def test_peers_are_compared_at_the_same_step_and_the_trial_by_its_best_so_far():
    curve = [(1, {"val_loss": 0.5, "latency_ms": 1.0}), (2, {"val_loss": 3.0, "latency_ms": 1.0})]
    later_better = [[(1, {"val_loss": 9.0, "latency_ms": 1.0}), (2, {"val_loss": 0.4, "latency_ms": 1.0})]]
    stopped_early = [[(1, {"val_loss": 0.1, "latency_ms": 0.1})]]      # no report at step 2
    assert not prune_on_front(SPEC, curve, stopped_early * 3, TWO)
    assert not prune_on_front(SPEC, curve, [[(2, {"val_loss": 0.6, "latency_ms": 1.0})]], TWO)  # best 0.5
    assert prune_on_front(SPEC, curve, later_better, TWO)


def test_an_objective_reported_only_at_the_end_is_not_judged():
    trial = reports(4, val_loss=2.0)                     # latency comes with the final metrics only
    assert judged_metrics(trial, TWO) == ["val_loss"]
    assert prune_on_front(SPEC, trial, [reports(4, val_loss=1.0)] * 3, TWO)
    assert not prune_on_front(SPEC, reports(4, train_loss=2.0), [reports(4, val_loss=1.0)] * 3, TWO)


def test_nothing_is_pruned_before_min_steps_off_the_interval_or_before_startup_trials():
    others = peers_at(10, [(1, 1)] * 3) + peers_at(20, [(1, 1)] * 3)
    bad = {"val_loss": 9.0, "latency_ms": 9.0}
    spec = PrunerSpec(kind="pareto", startup_trials=3, min_steps=10, interval_steps=10)
    assert prune_on_front(spec, [(10, bad)], others, TWO)
    assert not prune_on_front(spec, [(5, bad)], peers_at(5, [(1, 1)] * 6), TWO)      # before min_steps
    assert not prune_on_front(spec, [(15, bad)], peers_at(15, [(1, 1)] * 6), TWO)    # off the interval
    assert not prune_on_front(PrunerSpec(kind="pareto", startup_trials=7), [(10, bad)], others, TWO)


def test_a_trial_with_nothing_but_nan_is_pruned_once_peers_have_values():
    assert prune_on_front(SPEC, reports(3, val_loss=float("nan"), latency_ms=float("nan")),
                          peers_at(3, [(1, 1)]), TWO)


# --- the study file ------------------------------------------------------------------------

def _study(tmp_path, pruner, objectives=None, objective="tests.test_objective:two_metric_curve"):
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}} if objective.startswith("builtin") \
        else {"slope": {"type": "float", "low": 0, "high": 9}}
    doc = {"study": "p", "space": space,
           "objectives": objectives or [{"metric": "val_loss", "direction": "minimize"},
                                        {"metric": "latency_ms", "direction": "minimize"}],
           "objective": objective, "trainer": {"steps": 6}, "pruner": pruner}
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(doc))
    return path, doc


def test_a_pareto_pruner_loads_with_its_share(tmp_path):
    path, doc = _study(tmp_path, {"kind": "pareto", "dominated_by": 0.5, "min_steps": 2})
    spec = load_spec(path)
    assert spec.pruner.kind == "pareto" and spec.pruner.dominated_by == 0.5
    assert errors(study_schema(), doc) == []


@pytest.mark.parametrize("pruner, objectives, problem", [
    ({"kind": "pareto"}, [{"metric": "val_loss", "direction": "minimize"}],
     r"pruner.kind: pareto judges several objectives"),
    ({"kind": "pareto", "metric": "val_loss"}, None, r"pruner.metric: pareto judges every objective"),
    ({"kind": "pareto", "dominated_by": 0}, None, r"pruner.dominated_by: must be a share"),
    ({"kind": "pareto", "dominated_by": 1.5}, None, r"pruner.dominated_by: must be a share"),
    ({"kind": "pareto", "dominated_by": "half"}, None, r"pruner.dominated_by"),
])
def test_a_bad_pareto_pruner_is_an_error_naming_file_and_key(tmp_path, pruner, objectives, problem):
    path, doc = _study(tmp_path, pruner, objectives)
    with pytest.raises(SpecError, match=problem) as info:
        load_spec(path)
    assert "p.yaml" in str(info.value)
    if not isinstance(pruner.get("dominated_by", 0.5), str) and len(doc["objectives"]) == 2 \
            and "metric" not in pruner:
        assert errors(study_schema(), doc) != []   # the schema rejects what the parser rejects


def test_the_builtin_objective_with_only_end_of_run_objectives_is_refused(tmp_path):
    objectives = [{"metric": "latency_ms", "direction": "minimize"}, {"metric": "mfu", "direction": "maximize"}]
    path, _ = _study(tmp_path, {"kind": "pareto"}, objectives, objective="builtin:moe_lm")
    with pytest.raises(SpecError, match=r"pruner.kind: pareto judges the objectives as reported at each "
                                        r"evaluation, and builtin:moe_lm reports latency_ms, mfu only at the end"):
        load_spec(path)


def test_the_builtin_objective_with_val_loss_and_latency_loads(tmp_path):
    objectives = [{"metric": "val_loss", "direction": "minimize"}, {"metric": "latency_ms", "direction": "minimize"}]
    path, _ = _study(tmp_path, {"kind": "pareto"}, objectives, objective="builtin:moe_lm")
    assert load_spec(path).pruner.kind == "pareto"


def test_the_cli_exits_2_on_a_bad_pareto_pruner(tmp_path):
    from click.testing import CliRunner

    from autotune.cli import main
    path, _ = _study(tmp_path, {"kind": "pareto", "dominated_by": 2})
    result = CliRunner().invoke(main, ["run", str(path), "--no-live"])
    assert result.exit_code == 2 and "pruner.dominated_by" in result.output


