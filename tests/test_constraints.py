"""Constraints and out-of-memory trials, end to end: study file -> objective bridge -> sampler -> store."""
from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autotune import space as space_mod
from autotune import store
from autotune.objective import TrialFailed, TrialObjective
from autotune.outcomes import outcome, outcome_counts
from autotune.samplers import build_sampler
from autotune.spec import parse_spec
from tests.samplers_tests.test_samplers import FAST_OPTIONS

optuna.logging.set_verbosity(optuna.logging.WARNING)
OOM_ABOVE = 0.6


def memory_hungry(params, report):
    """Needs 1000 * x MB; runs out of memory above x = 0.6 (the GPU's limit); best at x = 0.8."""
    x = params["x"]
    if x > OOM_ABOVE:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                     "total capacity of 8.00 GiB of which 10.00 MiB is free.")
    return {"val_loss": (x - 0.8) ** 2 + 0.1 * params["depth"], "peak_mem_mb": 1000 * x}


def run_study(tmp_path, kind: str, n_trials: int, constraints=("peak_mem_mb <= 700",), first=None, seed=0):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = parse_spec({"study": "c", "storage": url,
                       "space": {"x": {"type": "float", "low": 0, "high": 1},
                                 "depth": {"type": "int", "low": 0, "high": 3}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}],
                       "objective": f"{__name__}:memory_hungry", "constraints": list(constraints),
                       "optimizer": {"kind": kind, "seed": seed, **FAST_OPTIONS[kind]}},
                      base_dir=tmp_path, default_name="c")
    sampler = build_sampler(kind, seed=seed, **FAST_OPTIONS[kind])
    study = store.create_or_load_study(store.open_storage(url), "c", ["minimize"], sampler=sampler)
    objective = TrialObjective(spec, url)
    if first is not None:
        study.enqueue_trial(first)
    for _ in range(n_trials):   # what the scheduler's parent and worker do, in one process
        trial = study.ask()
        params = space_mod.suggest(trial, spec.space)
        try:
            study.tell(trial, objective(trial._trial_id, params))
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            study.tell(trial, state=TrialState.FAIL)
    return study


def test_an_out_of_memory_trial_is_stored_complete_infeasible_with_the_memory_it_reached(tmp_path):
    study = run_study(tmp_path, "random", 12)
    ooms = [t for t in study.trials if t.params["x"] > OOM_ABOVE]
    assert ooms and study.trials[0].params["x"] <= OOM_ABOVE   # seed 0: the first trial fits
    fine = [t for t in study.trials if t.params["x"] <= OOM_ABOVE]
    worst = max(t.value for t in fine if t.number < ooms[0].number)
    for t in ooms:
        assert t.state == TrialState.COMPLETE and outcome(t) == "out of memory"
        assert t.user_attrs["infeasible"] == "oom" and "CUDA out of memory" in t.user_attrs["oom_reason"]
        assert t.user_attrs["metrics"] == {"peak_mem_mb": 2048.0}    # the failed allocation
        assert t.constraints == {"peak_mem_mb <= 700": pytest.approx(2048 / 700 - 1),
                                 "out_of_memory": 1.0}
    assert ooms[0].value == pytest.approx(worst)
    for t in fine:
        assert t.constraints == {"peak_mem_mb <= 700": pytest.approx((1000 * t.params["x"] - 700) / 700),
                                 "out_of_memory": 0.0}
    assert outcome_counts(study.trials)["out of memory"] == len(ooms)


def test_an_out_of_memory_first_trial_fails_having_nothing_to_rank_it_against(tmp_path):
    study = run_study(tmp_path, "random", 1, constraints=(), first={"x": 0.9, "depth": 0})
    failed = study.trials[0]
    assert failed.params["x"] == 0.9 and failed.state == TrialState.FAIL
    assert "out of memory" in failed.user_attrs["fail_reason"]


# TPE is not held to this: within 45 trials its Parzen kernels around the best feasible trials,
# which sit at the memory limit, spill over it (measured: 32 % out of memory in the first half,
# 43 % in the second; random 40 %; over seeds 0-3, trials 15-29: TPE 42 %, random 35 %). It was
# a non-strict xfail, which passes whatever happens, so it is left out rather than run for nothing.
# Random is the control: it must fail the bar (strict), so the bar tells learning from chance.
LEARNING_KINDS = [pytest.param("random", marks=pytest.mark.xfail(strict=True, reason="the control")),
                  "hybrid", "evolution", "nsga2", pytest.param("gp", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind", LEARNING_KINDS)
def test_the_search_learns_to_avoid_running_out_of_memory(kind, tmp_path):
    # Over 4 seeds: one seed's share swings with where its best trial sits (seeds 0-5, trials
    # 15-29: evolution 0 to 40 %, NSGA-II 13 to 33 %, hybrid 0 to 33 %), the mean much less.
    shares = []
    for seed in range(4):
        (tmp_path / str(seed)).mkdir()
        study = run_study(tmp_path / str(seed), kind, 30, seed=seed)
        late = study.trials[15:]
        shares.append(sum(t.params["x"] > OOM_ABOVE for t in late) / len(late))
        best = study.best_trial   # Optuna's: feasible trials only
        assert best.params["x"] <= OOM_ABOVE and all(v <= 0 for v in best.constraints.values())
    # Over these seeds: random 0.35 (0.4 expected), hybrid 0.10, evolution 0.17, NSGA-II 0.22.
    assert sum(shares) / len(shares) <= 0.25, shares


SPEC = {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "objectives": [{"metric": "val_loss", "direction": "minimize"}], "trainer": {"steps": 10}}


def test_constraints_parse_into_metric_operator_bound():
    spec = parse_spec({**SPEC, "constraints": ["peak_mem_mb <= 40000", "accuracy>=0.9"]})
    assert [str(c) for c in spec.constraints] == ["peak_mem_mb <= 40000", "accuracy >= 0.9"]


@pytest.mark.parametrize("constraints, problem", [
    (["peak_mem <= 4"], r"constraints\[0\]: builtin:moe_lm never reports 'peak_mem'; did you mean 'peak_mem_mb'\?"),
    (["latency_ms < 5"], r"constraints\[0\]: operator '<' is not supported: use <= or >=; write latency_ms <= 5"),
    (["latency_ms <= fast"], r"constraints\[0\]: bound 'fast' is not a number"),
    (["latency_ms"], r"constraints\[0\]: 'latency_ms' is not METRIC <= NUMBER or METRIC >= NUMBER"),
    ([{"latency_ms": 5}], r"constraints\[0\]: must be a text"),
    ({"latency_ms": {"max": 5}}, r"constraints: must be a list of texts"),
])
def test_a_bad_constraint_names_its_key_and_the_fix(constraints, problem):
    from autotune.spec import SpecError
    with pytest.raises(SpecError, match=problem):
        parse_spec({**SPEC, "constraints": constraints})


def test_status_and_best_count_out_of_memory_trials_and_show_only_a_feasible_best(tmp_path):
    from click.testing import CliRunner

    from autotune.cli import main
    study = run_study(tmp_path, "random", 12)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    n_oom = sum(t.params["x"] > OOM_ABOVE for t in study.trials)
    feasible = [t for t in study.trials if 1000 * t.params["x"] <= 700]
    best = min(feasible, key=lambda t: t.value)
    status = CliRunner().invoke(main, ["status", "c", "--storage", url])
    assert status.exit_code == 0 and f"{n_oom} out of memory" in status.output
    assert f"best        #{best.number}:" in status.output
