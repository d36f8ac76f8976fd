"""Trials over several processes (issue 21): gloo ranks on the CPU (``parallel.procs_per_trial``),
the scheduler's slots of several GPUs, and the ``parallel`` keys' checks."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from tests import rank_objectives
from tests.scheduler_tests.helpers import alive

from autotune.cli import main
from autotune.data.batching import Batch
from autotune.constraints import is_out_of_memory
from autotune.distributed import OnRanks, RankFailed, shard_batch, shard_batches
from autotune.scheduler.gpus import plan_slots
from autotune.objective import moe_lm
from autotune.spec import SpecError, check_gpus_per_trial, parse_spec
from autotune.spec_types import ParallelSpec


def study_file(tmp_path: Path, objective: str, *, trials: int, parallel: dict, **extra) -> Path:
    doc = {"study": "ranks", "storage": f"sqlite:///{tmp_path / 'store.db'}",
           "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
           "objectives": [{"metric": "val_loss", "direction": "minimize"}],
           "optimizer": {"kind": "random", "seed": 0}, "budget": {"trials": trials},
           "parallel": parallel, "objective": objective, **extra}
    path = tmp_path / "ranks.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def stored(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="ranks", storage=f"sqlite:///{tmp_path / 'store.db'}").get_trials()


# --- the parallel keys ---------------------------------------------------------------------------

def spec_with(parallel: dict):
    return parse_spec({"study": "s", "space": {"lr": {"type": "float", "low": 0.001, "high": 0.01}},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}],
                       "budget": {"trials": 1}, "parallel": parallel}, file=Path("s.yaml"))


@pytest.mark.parametrize("parallel, key, problem", [
    ({"gpus_per_trial": 0}, "parallel.gpus_per_trial", ">= 1"),
    ({"procs_per_trial": 1.5}, "parallel.procs_per_trial", "whole number"),
    ({"gpus_per_trial": 2, "procs_per_trial": 2}, "parallel.procs_per_trial", "cannot go with"),
    ({"gpus_per_trial": 2, "trials_per_gpu": 2}, "parallel.trials_per_gpu", "must be 1"),
    ({"gpus_per_trial": 2, "gpus": 0}, "parallel.gpus_per_trial", "procs_per_trial"),
])
def test_bad_ranks_per_trial_name_the_key(parallel, key, problem):
    with pytest.raises(SpecError) as err:
        spec_with(parallel)
    assert key in str(err.value) and problem in str(err.value) and "s.yaml" in str(err.value)


def test_more_gpus_per_trial_than_the_run_has_is_refused():
    spec = spec_with({"gpus_per_trial": 4})
    check_gpus_per_trial(spec, 4)
    with pytest.raises(SpecError, match=r"parallel.gpus_per_trial.*4 GPUs per trial.*2 GPU"):
        check_gpus_per_trial(spec, 2)


def test_run_without_enough_gpus_exits_2_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    path = study_file(tmp_path, "tests.user_objectives:quadratic", trials=1,
                      parallel={"gpus_per_trial": 2})
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "ranks.yaml" in result.output and "parallel.gpus_per_trial" in result.output
    assert "Traceback" not in result.output


# --- slots ---------------------------------------------------------------------------------------

def test_eight_gpus_two_per_trial_make_four_slots_each_pinned_to_its_pair():
    slots = plan_slots(ParallelSpec(gpus_per_trial=2), available=[str(i) for i in range(8)])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3", "4,5", "6,7"]
    assert [s.share for s in slots] == [2.0] * 4          # GPU-hours count both GPUs


def test_gpus_left_over_from_a_whole_slot_stay_idle():
    slots = plan_slots(ParallelSpec(gpus_per_trial=3), available=[str(i) for i in range(8)])
    assert [s.gpu for s in slots] == ["0,1,2", "3,4,5"]


def test_procs_per_trial_makes_cpu_slots_that_fit_the_cores(monkeypatch):
    monkeypatch.setattr("autotune.scheduler.gpus.usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = plan_slots(ParallelSpec(procs_per_trial=2, workers=8, fit_cores=True), available=["0"])
    assert [s.gpu for s in slots] == [None, None]        # GPUs hidden; 4 cores / 2 ranks
    assert all(s.threads == 2 for s in slots)


# --- a batch split over ranks --------------------------------------------------------------------

def test_the_ranks_shares_make_up_the_global_batch():
    inputs = torch.arange(5 * 3).view(5, 3)
    batch = Batch(inputs, inputs + 100, 15)
    shares = [shard_batch(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([s.inputs for s in shares]), inputs)
    assert torch.equal(torch.cat([s.targets for s in shares]), inputs + 100)
    assert sum(s.num_tokens for s in shares) == 15


def test_a_batch_smaller_than_the_ranks_is_refused():
    batch = Batch(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="cannot be split over 2 ranks"):
        shard_batch(batch, 0, 2)


# --- trials over 2 gloo ranks --------------------------------------------------------------------

SMALL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "num_experts": 4, "top_k": 2, "window": 16,
         "block_size": 16, "task": "mqar", "seq_len": 32, "num_pairs": 4, "batch_size": 8,
         "steps": 12, "eval_every": 4, "eval_batches": 2, "device": "cpu", "precision": "fp32",
         "compile": False, "lr": 3e-3}


def curve_of(fn, config):
    curve = []

    def report(step, metrics):
        curve.append((step, metrics["val_loss"], metrics["train_loss"]))
        return True

    return curve, fn(config, report)


def test_each_rank_reads_its_share_of_every_batch(monkeypatch):
    monkeypatch.setattr("autotune.distributed.world", lambda: (1, 2))
    batches = [Batch(torch.arange(8).view(4, 2), torch.zeros(4, 2, dtype=torch.long), 8)] * 2
    shares = list(shard_batches(iter(batches)))
    assert [s.inputs.tolist() for s in shares] == [[[4, 5], [6, 7]]] * 2
    assert [s.num_tokens for s in shares] == [4, 4]


def test_a_rank_out_of_memory_fails_the_launch_as_out_of_memory():
    with pytest.raises(RankFailed) as err:
        OnRanks(rank_objectives.rank_one_runs_out_of_memory, 2)({}, lambda step, metrics: True)
    assert "rank 1 of 2: OutOfMemoryError: CUDA out of memory" in str(err.value)
    assert is_out_of_memory(err.value)     # the objective records such a trial as infeasible


@pytest.mark.slow   # ~25 s each on 2 cores
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_ranks_learn_what_one_rank_learns_from_the_same_global_batch(sharding):
    config = {**SMALL, "sharding": sharding}
    alone, _ = curve_of(moe_lm, config)
    ranks, result = curve_of(OnRanks(moe_lm, 2), config)
    assert [s for s, *_ in ranks] == [s for s, *_ in alone] == [4, 8, 12]
    for (_, val1, train1), (_, val2, train2) in zip(alone, ranks):
        assert val2 == pytest.approx(val1, rel=2e-3)
        assert train2 == pytest.approx(train1, rel=2e-3)
    assert alone[-1][1] < alone[0][1]                    # it learnt something
    assert result["world_size"] == 2


@pytest.mark.slow   # ~23 s on 2 cores
def test_a_killed_rank_fails_its_trial_and_the_study_goes_on(tmp_path):
    path = study_file(tmp_path, "tests.rank_objectives:one_rank_dies_once", trials=2,
                      parallel={"procs_per_trial": 2, "workers": 1},
                      trainer={"steps": 3, "marker": str(tmp_path / "died")})
    result = CliRunner().invoke(main, ["run", str(path)])
    trials = stored(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE], \
        result.output
    assert trials[0].user_attrs["fail_reason"].endswith("rank 1 of 2: killed by SIGKILL")
    for trial in trials[1:]:    # metrics over both ranks: throughput summed, memory the largest
        metrics = trial.user_attrs["metrics"]
        assert (metrics["world_size"], metrics["tokens_per_s"], metrics["peak_mem_mb"]) == (2, 10.0, 11.0)


def test_a_pruning_decision_stops_every_rank_at_the_same_step(tmp_path):
    path = study_file(tmp_path, "tests.rank_objectives:worse_after_the_first", trials=2,
                      parallel={"procs_per_trial": 2, "workers": 1},
                      pruner={"kind": "median", "min_steps": 2, "startup_trials": 1},
                      trainer={"steps": 6, "marker": str(tmp_path / "first-done"),
                               "log_dir": str(tmp_path)})
    result = CliRunner().invoke(main, ["run", str(path)])
    assert [t.state for t in stored(tmp_path)] == [TrialState.COMPLETE, TrialState.PRUNED], result.output
    assert [(tmp_path / f"first-rank{r}").read_text() for r in (0, 1)] == ["5", "5"]
    assert [(tmp_path / f"later-rank{r}").read_text() for r in (0, 1)] == ["2", "2"]


@pytest.mark.slow   # the trial limit, then a second trial: ~40 s on 2 cores
def test_a_hung_rank_times_out_its_trial_and_dies_with_it(tmp_path):
    marker = tmp_path / "hung"
    path = study_file(tmp_path, "tests.rank_objectives:one_rank_hangs_once", trials=1,
                      parallel={"procs_per_trial": 2, "workers": 1},
                      budget={"trials": 1, "trial_timeout": "15s"}, trainer={"marker": str(marker)})
    result = CliRunner().invoke(main, ["run", str(path)])
    trials = stored(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], result.output
    assert "timeout" in trials[0].user_attrs["fail_reason"]
    assert not alive(int(marker.read_text()))


# --- compile: auto decided once, by rank 0 -------------------------------------------------------

TINY = {**SMALL, "steps": 9, "eval_every": 9, "eval_batches": 1}   # compile: auto decides at step 8


@pytest.mark.parametrize("eager_step_s, compiled", [((1e3, 1e-6), "True"), ((1e-6, 1e3), "False")])
def test_every_rank_follows_rank_0s_compile_decision(tmp_path, eager_step_s, compiled):
    # the ranks' timings fall on either side of the threshold: alone, each would choose differently
    config = {**TINY, "eager_step_s": list(eager_step_s), "log_dir": str(tmp_path)}
    result = OnRanks(rank_objectives.compile_auto_on_rank_timings, 2)(config, lambda step, m: True)
    assert [(tmp_path / f"compiled-rank{r}").read_text() for r in (0, 1)] == [compiled, compiled]
    assert f"{eager_step_s[0] * 1e3:.1f} ms" in result["compile"]["reason"]   # rank 0's timing


# --- gradient accumulation: one all-reduce a step ------------------------------------------------

def test_ddp_all_reduces_gradients_once_an_optimizer_step_with_accumulation(tmp_path):
    config = {**TINY, "steps": 3, "eval_every": 3, "grad_accum": 2, "log_dir": str(tmp_path)}
    OnRanks(rank_objectives.counts_gradient_syncs, 2)(config, lambda step, m: True)
    assert [(tmp_path / f"syncs-rank{r}").read_text() for r in (0, 1)] == ["3", "3"]


@pytest.mark.slow   # ~25 s on 2 cores
def test_two_ranks_with_gradient_accumulation_learn_what_one_rank_learns(tmp_path):
    config = {**SMALL, "grad_accum": 2}
    alone, _ = curve_of(moe_lm, config)
    ranks, result = curve_of(OnRanks(rank_objectives.counts_gradient_syncs, 2),
                             {**config, "log_dir": str(tmp_path)})
    assert [s for s, *_ in ranks] == [s for s, *_ in alone] == [4, 8, 12]
    for (_, val1, train1), (_, val2, train2) in zip(alone, ranks):
        assert val2 == pytest.approx(val1, rel=2e-3)
        assert train2 == pytest.approx(train1, rel=2e-3)
    assert [(tmp_path / f"syncs-rank{r}").read_text() for r in (0, 1)] == ["12", "12"]
    assert result["world_size"] == 2


# --- a searched width (issue 21 item 2) ----------------------------------------------------------

def spec_searching(width: dict, parallel: dict | None = None, **extra):
    space = {"lr": {"type": "float", "low": 0.001, "high": 0.01}, **width}
    return parse_spec({"study": "s", "space": space, "budget": {"trials": 1},
                       "objectives": [{"metric": "val_loss", "direction": "minimize"}],
                       "parallel": parallel or {}, **extra}, file=Path("s.yaml"))


@pytest.mark.parametrize("width", [
    {"procs_per_trial": {"type": "categorical", "choices": [1, 2]}},
    {"gpus_per_trial": {"type": "int", "low": 1, "high": 4}},
])
def test_the_builtin_objective_accepts_a_searched_width(width):
    spec = spec_searching(width)
    (name,) = width
    assert (spec.parallel.searched_width, spec.parallel.widest) == (name, {"procs_per_trial": 2}.get(name, 4))
    assert spec.parallel.width_key == f"space.{name}"


@pytest.mark.parametrize("width, parallel, key, problem", [
    ({"procs_per_trial": {"type": "float", "low": 1, "high": 2}}, {}, "space.procs_per_trial",
     "int or categorical"),
    ({"procs_per_trial": {"type": "categorical", "choices": [0, 2]}}, {}, "space.procs_per_trial",
     "whole number >= 1"),
    ({"gpus_per_trial": {"type": "categorical", "choices": [1, 2.5]}}, {}, "space.gpus_per_trial",
     "whole number >= 1"),
    ({"procs_per_trial": {"type": "int", "low": 1, "high": 2}}, {"procs_per_trial": 2},
     "space.procs_per_trial", "parallel.procs_per_trial is set"),
    ({"procs_per_trial": {"type": "int", "low": 1, "high": 2},
      "gpus_per_trial": {"type": "int", "low": 1, "high": 2}}, {}, "space.gpus_per_trial",
     "cannot be searched with"),
    ({"gpus_per_trial": {"type": "int", "low": 1, "high": 2}}, {"gpus": 0}, "space.gpus_per_trial",
     "parallel.gpus is 0"),
])
def test_a_bad_searched_width_names_file_and_key(width, parallel, key, problem):
    with pytest.raises(SpecError) as err:
        spec_searching(width, parallel)
    assert key in str(err.value) and problem in str(err.value) and "s.yaml" in str(err.value)


def test_a_searched_width_wider_than_the_machine_is_refused_at_run_time():
    gpus = spec_searching({"gpus_per_trial": {"type": "categorical", "choices": [1, 4]}})
    check_gpus_per_trial(gpus, 4, cores=1)
    with pytest.raises(SpecError, match=r"s.yaml.*space.gpus_per_trial.*4 ranks.*2 GPU"):
        check_gpus_per_trial(gpus, 2, cores=64)
    procs = spec_searching({"procs_per_trial": {"type": "int", "low": 1, "high": 3}})
    with pytest.raises(SpecError, match=r"space.procs_per_trial.*3 ranks.*2 usable CPU core"):
        check_gpus_per_trial(procs, 8, cores=2)


def test_the_trainer_never_sees_the_searched_width():
    from autotune.objective import TrialObjective
    spec = spec_searching({"procs_per_trial": {"type": "categorical", "choices": [1, 2]}})
    config = TrialObjective(spec, "sqlite://").config({"lr": 0.005, "procs_per_trial": 2})
    assert "procs_per_trial" not in config and config["lr"] == 0.005


@pytest.mark.slow   # six trials, half of them 2 gloo ranks: ~35 s on 2 cores
def test_each_trial_runs_at_its_own_searched_width(tmp_path):
    path = study_file(tmp_path, "tests.rank_objectives:reports_its_world", trials=6,
                      parallel={"fit_cores": False, "workers": 2})
    doc = yaml.safe_load(path.read_text())
    doc["space"]["procs_per_trial"] = {"type": "categorical", "choices": [1, 2]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 0, result.output
    trials = stored(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, result.output
    for trial in trials:
        metrics, width = trial.user_attrs["metrics"], trial.params["procs_per_trial"]
        assert metrics["world_size"] == metrics["ranks_seen"] == width
        assert metrics["width_in_params"] == 0
        assert len(trial.user_attrs.get("slots", [trial.user_attrs["slot"]])) == width
        assert trial.user_attrs["gpu_seconds"] == pytest.approx(     # every slot it held counts
            width * trial.user_attrs["slot_seconds"], abs=0.01)
    assert {t.params["procs_per_trial"] for t in trials} == {1, 2}
