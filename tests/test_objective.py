"""The objective bridge: reports become intermediate values and pruning decisions."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autotune import store
from autotune.objective import TrialObjective
from autotune.spec import parse_spec


class PruneFromStep(optuna.pruners.BasePruner):
    """Prunes every trial once it has reported ``step`` or later."""

    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study, trial) -> bool:
        return (trial.last_step or 0) >= self.step


def curve(params, report):
    """Reports steps 1..steps (like the built-in trainer) and stops when told."""
    loss = 1.0
    for step in range(1, int(params["steps"]) + 1):
        loss = 1.0 / step
        if not report(step, {"val_loss": loss}):
            break
    return {"val_loss": loss}


def _run(tmp_path, prune_from: int, steps: int, max_steps: int | None = None):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    pruner = {"kind": "median"} if max_steps is None else {"kind": "hyperband", "max_steps": max_steps}
    spec = parse_spec({"study": "o", "storage": url, "space": {"x": {"type": "float", "low": 0, "high": 1}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}],
                       "objective": f"{__name__}:curve", "trainer": {"steps": steps}, "pruner": pruner},
                      base_dir=tmp_path, default_name="o")
    study = store.create_or_load_study(store.open_storage(url), "o", ["minimize"])
    objective = TrialObjective(spec, url)
    objective._study = optuna.load_study(study_name="o", storage=store.open_storage(url),
                                         pruner=PruneFromStep(prune_from))
    trial = study.ask()
    try:
        values = objective(trial._trial_id, {"x": 0.5})
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, values)
    return study.trials[0]


def test_a_pruned_trial_stops_at_the_step_the_pruner_judged(tmp_path):
    trial = _run(tmp_path, prune_from=2, steps=5)
    assert trial.state == TrialState.PRUNED and sorted(trial.intermediate_values) == [1, 2]


def test_the_last_steps_report_is_recorded_but_never_prunes(tmp_path):
    trial = _run(tmp_path, prune_from=5, steps=5)
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.2)
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]


def test_the_pruners_max_steps_is_the_last_step_when_given(tmp_path):
    trial = _run(tmp_path, prune_from=3, steps=5, max_steps=3)
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.2)


def test_several_objectives_store_the_curve_as_it_grows(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    spec = parse_spec({"study": "m", "storage": url, "space": {"x": {"type": "float", "low": 0, "high": 1}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"},
                                      {"metric": "accuracy", "direction": "maximize"}],
                       "objective": f"{__name__}:curve", "trainer": {"steps": 3}},
                      base_dir=tmp_path, default_name="m")
    study = store.create_or_load_study(store.open_storage(url), "m", ["minimize", "maximize"])
    trial = study.ask()
    seen = []

    def watching(params, report):      # what the store holds after each report, while it runs
        for step in (1, 2):
            report(step, {"val_loss": 1.0 / step, "accuracy": 0.1 * step})
            seen.append(study._storage.get_trial(trial._trial_id).user_attrs.get("curve"))
        return {"val_loss": 0.5, "accuracy": 0.2}

    monkeypatch.setattr("autotune.objective.resolve", lambda ref, spec=None: watching)
    TrialObjective(spec, url)(trial._trial_id, {"x": 0.5})
    # the first report is stored at once; the second within CURVE_SAVE_S of it waits for the end
    assert seen[0] == [[1, {"val_loss": 1.0, "accuracy": 0.1}]]
    assert seen[1] == seen[0]
    assert study._storage.get_trial(trial._trial_id).user_attrs["curve"] == [
        [1, {"val_loss": 1.0, "accuracy": 0.1}], [2, {"val_loss": 0.5, "accuracy": 0.2}]]


# --- several objectives: pruning on a named metric's curve ------------------------------------

def two_metric_curve(params, report):
    """val_loss falls as slope / step; latency is constant. Stops when told."""
    loss = 1.0
    for step in range(1, int(params["steps"]) + 1):
        loss = params["slope"] / step
        if not report(step, {"val_loss": loss, "latency_ms": 1.0}):
            break
    return {"val_loss": loss, "latency_ms": 1.0}


def _run_two(tmp_path, slopes, pruner):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    spec = parse_spec({"study": "m", "storage": url, "space": {"slope": {"type": "float", "low": 0, "high": 9}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"},
                                      {"metric": "latency_ms", "direction": "minimize"}],
                       "objective": f"{__name__}:two_metric_curve", "trainer": {"steps": 6},
                       "pruner": pruner}, base_dir=tmp_path, default_name="m")
    study = store.create_or_load_study(store.open_storage(url), "m", ["minimize", "minimize"])
    objective = TrialObjective(spec, url)
    for slope in slopes:
        trial = study.ask({"slope": optuna.distributions.FloatDistribution(0, 9)})
        trial.params  # noqa: B018 - fixed by ask
        try:
            study.tell(trial, objective(trial._trial_id, {"slope": slope}))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
    return study.trials


def test_several_objectives_prune_on_the_named_metric_against_finished_curves(tmp_path):
    pruner = {"kind": "median", "metric": "val_loss", "startup_trials": 3, "min_steps": 2}
    trials = _run_two(tmp_path, [1.0, 1.2, 0.8, 3.0, 0.9], pruner)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE]
    assert [step for step, _ in trials[3].user_attrs["curve"]] == [1, 2]   # stopped at min_steps
    assert len(trials[4].user_attrs["curve"]) == 6


def test_several_objectives_without_pruner_never_prune(tmp_path):
    trials = _run_two(tmp_path, [1.0, 1.2, 0.8, 3.0], {"kind": "none"})
    assert all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.parametrize("pruner, problem", [
    ({"kind": "median"}, r"pruner.kind: with several objectives, prune with kind: pareto, or median or percentile and metric"),
    ({"kind": "sha", "metric": "val_loss"}, r"pruner.kind: with several objectives"),
    ({"kind": "median", "metric": "accuracy"}, r"pruner.metric: 'accuracy' is not an objective's metric"),
])
def test_a_pruner_for_several_objectives_needs_a_median_rule_on_an_objectives_metric(tmp_path, pruner, problem):
    from autotune.spec import SpecError
    with pytest.raises(SpecError, match=problem):
        _run_two(tmp_path, [], pruner)


# --- several objectives: the rung-wise Pareto rule ------------------------------------------

def loss_and_latency_curve(params, report):
    """val_loss falls as slope / step; latency_ms is the trial's own, reported at every step."""
    loss = 1.0
    for step in range(1, int(params["steps"]) + 1):
        loss = params["slope"] / step
        if not report(step, {"val_loss": loss, "latency_ms": params["latency"]}):
            break
    return {"val_loss": loss, "latency_ms": params["latency"]}


def test_pareto_prunes_a_dominated_trial_and_keeps_a_fast_one_median_on_val_loss_would_stop(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    pruner = {"kind": "pareto", "startup_trials": 3, "min_steps": 2, "dominated_by": 0.5}
    spec = parse_spec({"study": "p", "storage": url,
                       "space": {"slope": {"type": "float", "low": 0, "high": 9},
                                 "latency": {"type": "float", "low": 0, "high": 9}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"},
                                      {"metric": "latency_ms", "direction": "minimize"}],
                       "objective": f"{__name__}:loss_and_latency_curve", "trainer": {"steps": 6},
                       "pruner": pruner}, base_dir=tmp_path, default_name="p")
    study = store.create_or_load_study(store.open_storage(url), "p", ["minimize", "minimize"])
    objective = TrialObjective(spec, url)
    dist = optuna.distributions.FloatDistribution(0, 9)
    messages = []
    # three peers, then: slow and worse (dominated by all), fast and worse (dominated by none)
    for slope, latency in [(1.0, 5.0), (1.2, 4.0), (0.8, 6.0), (3.0, 7.0), (3.0, 0.5)]:
        trial = study.ask({"slope": dist, "latency": dist})
        try:
            study.tell(trial, objective(trial._trial_id, {"slope": slope, "latency": latency}))
        except optuna.TrialPruned as exc:
            messages.append(str(exc))
            study.tell(trial, state=TrialState.PRUNED)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE]
    assert [step for step, _ in trials[3].user_attrs["curve"]] == [1, 2]   # stopped at min_steps
    assert messages == ["pruned by pareto at step 2 (dominated on val_loss, latency_ms)"]


def _compiled(attention, eager_ms, compiled_ms, compile_s):
    return {"compiled": True, "attention": attention, "eager_step_ms": eager_ms,
            "compiled_step_ms": compiled_ms, "compile_s": compile_s}


def test_compile_costs_come_from_compiled_trials_of_the_same_attention_when_there_are_any():
    from autotune.compile_policy import compile_costs_from
    records = [_compiled("sparse", 144.0, 70.0, 46.0), _compiled("sparse", 100.0, 50.0, 40.0),
               _compiled("dense", 98.0, 91.0, 27.0), {"compiled": False, "attention": "dense"}]
    sparse = compile_costs_from(records, attention="sparse")
    assert sparse.trials == 2 and sparse.speedup == pytest.approx((144 / 70 + 2.0) / 2)
    assert sparse.compile_s == pytest.approx(43.0)
    dense = compile_costs_from(records, attention="dense")
    assert dense.trials == 1 and dense.speedup == pytest.approx(98 / 91) and dense.compile_s == 27.0
    # no compiled trial of this attention yet: every compiled trial's figures; none at all: the prior
    assert compile_costs_from(records[2:3], attention="sparse").trials == 1
    assert compile_costs_from([{"compiled": False}], attention="sparse").trials == 0


def test_compile_costs_keep_trials_with_a_helper_apart_from_those_that_compiled_alone():
    """A helper's trial pays seconds to load graphs where one alone pays the whole compile: each
    decision is judged by its own kind (issue 15)."""
    from autotune.compile_policy import compile_costs_from
    from autotune.compile_policy import CompileCosts

    helped = [{**_compiled("sparse", 144.0, 70.0, 2.5), "ahead": True, "ahead_s": 48.0},
              {**_compiled("sparse", 140.0, 70.0, 3.5), "ahead": True, "ahead_s": 52.0}]
    alone = [{**_compiled("sparse", 144.0, 70.0, 40.0), "ahead": "no: several ranks"}]
    costs = compile_costs_from(helped + alone, attention="sparse")
    assert (costs.compile_s, costs.ahead_compile_s, costs.ahead_s, costs.trials) == (40.0, 3.0, 50.0, 3)
    only_helped = compile_costs_from(helped, attention="sparse")
    assert only_helped.compile_s == CompileCosts().compile_s and only_helped.ahead_compile_s == 3.0


def test_each_trial_reads_the_compile_figures_other_workers_stored_since(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = parse_spec({"study": "c", "storage": url, "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}]},
                      base_dir=tmp_path, default_name="c")
    study = store.create_or_load_study(store.open_storage(url), "c", ["minimize"])
    objective = TrialObjective(spec, url)
    seen = objective._load_study()
    assert objective._compile_costs(seen, {"attention": "sparse"}).trials == 0
    other = study.ask()                              # another worker's trial finishes meanwhile
    other.set_user_attr("compile", _compiled("sparse", 120.0, 60.0, 33.0))
    study.tell(other, 1.0)
    costs = objective._compile_costs(seen, {"attention": "sparse"})
    assert costs.trials == 1 and costs.speedup == pytest.approx(2.0) and costs.compile_s == 33.0


def test_a_trial_whose_top_k_exceeds_its_experts_fails_saying_so_before_training():
    """A searched top_k that only some trials push past num_experts: that trial fails with the
    reason (the model used to clamp it silently)."""
    from autotune.objective import TrialFailed, moe_lm

    def never(step, metrics):
        raise AssertionError("trained a configuration that cannot exist")

    with pytest.raises(TrialFailed, match="top_k 4 is more than num_experts 2: a token cannot be routed"):
        moe_lm({"num_experts": 2, "top_k": 4, "steps": 1}, never)


def test_the_moe_layer_refuses_more_routed_experts_than_it_has():
    from autotune.model.moe import MoE
    with pytest.raises(ValueError, match="top_k 3 is more than num_experts 2"):
        MoE(d_model=8, d_ff=16, num_experts=2, top_k=3)


@pytest.mark.parametrize("trainer,ahead,starts", [
    ({}, True, True),                       # compile: auto, and a trial compiled ahead before
    ({}, "no: several ranks", False),       # compiled, but never in a helper
    ({}, None, False),                      # no trial compiled yet
    ({"compile": False}, True, False),      # the study turned compiling off since
])
def test_a_worker_prestarts_the_compile_helper_only_where_the_study_compiled_ahead_before(
        tmp_path, monkeypatch, trainer, ahead, starts):
    import torch

    import autotune.compile_ahead
    import autotune.train  # noqa: F401 - imported before CUDA is faked below: modules (Inductor's
    # config among them, whose values are in every compile cache key) must not see a fake GPU
    url = f"sqlite:///{tmp_path / 'p.db'}"
    spec = parse_spec({"study": "p", "storage": url, "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}], "trainer": trainer},
                      base_dir=tmp_path, default_name="p")
    study = store.create_or_load_study(store.open_storage(url), "p", ["minimize"])
    if ahead is not None:
        earlier = study.ask()
        earlier.set_user_attr("compile", {**_compiled("dense", 120.0, 60.0, 10.0), "ahead": ahead})
        study.tell(earlier, 1.0)
    started = []
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))   # warm_up sets them
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))           # where they are unset
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)      # the GPU's path, on a CPU
    monkeypatch.setattr(torch, "empty", lambda *a, **k: None)
    monkeypatch.setattr(autotune.compile_ahead, "prestart", lambda: started.append(True))
    objective = TrialObjective(spec, url)
    objective.warm_up()                         # before the study is opened: no decision yet
    assert not started
    objective._prestart_helper(objective._load_study())     # at the worker's first trial
    objective._prestart_helper(objective._load_study())     # once a worker
    assert started == ([True] if starts else [])


def test_a_workers_warm_up_leaves_the_store_alone(tmp_path):
    # workers start before the run opens (or creates) the study: their warm-up must not open the
    # store (an SQLite file would be created under the run creating its tables)
    db = tmp_path / "later.db"
    spec = parse_spec({"study": "w", "storage": f"sqlite:///{db}",
                       "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}]},
                      base_dir=tmp_path, default_name="w")
    TrialObjective(spec, spec.storage).warm_up()
    assert not db.exists()
