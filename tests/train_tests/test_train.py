"""The training loop: configuration, schedule, reporting, stopping, divergence and metrics."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch

import autotune.train
from autotune.compile_policy import CompileCosts, compile_choice
from autotune.model import ModelConfig, Transformer
from autotune.train import (BUILTIN_METRICS, TrainConfig, TrainingDiverged, expert_load_cv, lr_multiplier,
                            train)

QUICK = TrainConfig(seq_len=32, num_pairs=4, task_vocab=32, batch_size=8, steps=6, eval_every=3,
                    eval_batches=1, threads=1)


# --- configuration and schedule --------------------------------------------------------------

def test_field_names_are_every_training_knob_and_none_of_the_models():
    names = TrainConfig.field_names()
    assert {"task", "data_path", "seq_len", "num_pairs", "task_vocab", "steps", "eval_every", "lr",
            "warmup_steps", "min_lr_ratio", "weight_decay", "grad_clip", "batch_size", "tokens_per_batch",
            "grad_accum", "precision", "compile", "device", "seed", "threads", "batching", "max_batch_size",
            "max_batch_tokens"} <= names
    assert not names & ModelConfig.field_names()        # the objective splits parameters by name


@pytest.mark.parametrize("field, value", [("precision", "fp8"), ("compile", "yes"), ("device", "tpu"),
                                          ("steps", 0), ("grad_accum", 0), ("lr", -1.0),
                                          ("batching", "costs"), ("batching", "cost"),    # cost: text only
                                          ("max_batch_size", 0), ("max_batch_tokens", 8)])
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    steps, warmup, floor = 100, 10, 0.1
    factors = [lr_multiplier(s, steps=steps, warmup=warmup, min_lr_ratio=floor) for s in range(steps)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))      # decays monotonically
    assert factors[-1] == pytest.approx(floor)
    middle = lr_multiplier(10 + 89 // 2, steps=steps, warmup=warmup, min_lr_ratio=floor)
    assert middle == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 44 / 89)))


def test_warmup_steps_override_the_fraction():
    assert TrainConfig(steps=200, warmup_fraction=0.1).warmup == 20
    assert TrainConfig(steps=200, warmup_fraction=0.1, warmup_steps=5).warmup == 5


def test_expert_load_cv_is_zero_when_balanced_and_grows_with_imbalance():
    assert expert_load_cv(torch.full((2, 4), 0.25)) == 0.0
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    assert expert_load_cv(skewed) == pytest.approx(float(skewed.std(unbiased=False) / 0.25))
    assert expert_load_cv(torch.ones(2, 1)) == 0.0                       # a dense FFN


# --- the loop --------------------------------------------------------------------------------

def test_final_metrics_carry_every_builtin_metric_as_finite_floats(tiny_model):
    metrics = train(tiny_model, QUICK)
    assert set(BUILTIN_METRICS) <= set(metrics)
    assert all(isinstance(metrics[k], float) and math.isfinite(metrics[k]) for k in BUILTIN_METRICS)
    assert metrics["latency"] == metrics["latency_ms"] > 0
    assert metrics["steps"] == 6 and metrics["tokens_per_s"] > 0 and metrics["step_ms"] > 0
    assert 0 <= metrics["accuracy"] <= 1 and 0 < metrics["keep_ratio_used"] <= 1
    assert metrics["params_active"] < metrics["params_total"]            # top-2 of 4 experts
    assert metrics["mfu"] == 0.0                                         # CPU


def test_report_is_called_at_each_evaluation_with_the_metrics_so_far(tiny_model):
    calls = []
    train(tiny_model, replace(QUICK, steps=7), lambda step, m: calls.append((step, m)) or True)
    assert [step for step, _ in calls] == [3, 6, 7]                      # and always the last step
    assert all({"val_loss", "accuracy", "train_loss", "step_ms"} <= set(m) for _, m in calls)


def test_report_false_stops_training_and_returns_the_metrics_so_far(tiny_model):
    calls = []

    def report(step, metrics):
        calls.append(step)
        return False

    metrics = train(tiny_model, replace(QUICK, steps=100), report)
    assert calls == [3] and metrics["steps"] == 3
    # a stopped trial skips the latency pass: nobody uses a pruned trial's latency
    assert set(BUILTIN_METRICS) - set(metrics) == {"latency_ms", "latency"}
    assert metrics["time_s"]["latency"] == 0.0


def test_the_model_vocabulary_and_length_come_from_the_data(tiny_model, monkeypatch):
    built = []
    monkeypatch.setattr(autotune.train, "build_model", lambda cfg: built.append(cfg) or Transformer(cfg))
    train(replace(tiny_model, vocab_size=7, max_seq_len=9), replace(QUICK, steps=1))
    assert built[0].vocab_size == 32 and built[0].max_seq_len == 32


class _Poisoned(Transformer):
    """Produces NaN logits from its third training forward pass on."""

    calls = 0

    def forward(self, tokens):
        logits, aux = super().forward(tokens)
        if self.training:
            type(self).calls += 1
            if type(self).calls >= 3:
                logits = logits * float("nan")
        return logits, aux


def test_nan_loss_raises_training_diverged_naming_step_and_value(tiny_model, monkeypatch):
    _Poisoned.calls = 0
    monkeypatch.setattr(autotune.train, "build_model", _Poisoned)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 3") as caught:
        train(tiny_model, QUICK)
    assert caught.value.step == 3 and math.isnan(caught.value.value)
    assert isinstance(caught.value, RuntimeError)


def test_divergence_between_host_syncs_is_reported_at_the_step_it_happened(tiny_model, monkeypatch):
    _Poisoned.calls = 0                        # NaN from step 3; no evaluation until the last step
    monkeypatch.setattr(autotune.train, "build_model", _Poisoned)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 3"):
        train(tiny_model, replace(QUICK, steps=autotune.train.CHECK_EVERY + 8, eval_every=0))
    assert _Poisoned.calls == autotune.train.CHECK_EVERY      # stopped at the first sync after it


def test_phase_times_account_for_the_run_and_report_time_is_the_callers(tiny_model):
    def slow_report(step, metrics):
        time.sleep(0.05)
        return True

    m = train(tiny_model, replace(QUICK, steps=7), slow_report)        # reports at 3, 6, 7
    parts = m["time_s"]
    assert set(parts) == {"setup", "compile", "train", "eval", "latency", "report", "other"}
    assert all(v >= 0 for v in parts.values())
    assert parts["report"] >= 3 * 0.05
    assert parts["eval"] > 0 and parts["latency"] > 0 and parts["train"] > 0
    steady = m["step_ms"] * (m["steps"] - autotune.train.TIMING_SKIP_STEPS) / 1e3
    assert parts["train"] >= steady * 0.95
    # the parts are the run: nothing counted twice, the bookkeeping between phases a small rest
    assert sum(parts.values()) == pytest.approx(m["train_s"], abs=1e-3)
    assert parts["other"] <= 0.5 * m["train_s"]
    assert m["compile"] == {"mode": "auto", "compiled": False, "reason": "eager on CPU", "attention": "sparse",
                            "eager_step_ms": pytest.approx(m["step_ms"], rel=0.5), "compiled_step_ms": None}


def test_compile_auto_compiles_only_when_the_remaining_steps_save_more_than_it_costs():
    costs = CompileCosts(speedup=1.5, compile_s=20.0, trials=3)
    # 1,000 steps x 0.1 s x (1 - 1/1.5) = 33 s saved > 20 s
    go, reason = compile_choice("auto", 1000, 0.1, costs)
    assert go and "33.3 s saved > 20.0 s to compile (from 3 compiled trial(s))" in reason
    go, reason = compile_choice("auto", 500, 0.1, costs)                 # 16.7 s saved
    assert not go and "<= 20.0 s" in reason
    assert compile_choice(True, 1, 0.0, costs)[0] and not compile_choice(False, 10**6, 1.0, costs)[0]
    assert "prior" in compile_choice("auto", 10, 0.01, CompileCosts())[1]


def test_forced_compile_on_cpu_is_recorded_with_its_cost(tiny_model, monkeypatch):
    monkeypatch.setattr(autotune.train, "COMPILE_BACKEND", "eager")   # Dynamo for real, no C++ build
    m = train(tiny_model, replace(QUICK, steps=6, eval_every=3, compile=True))
    assert m["compile"]["compiled"] and m["compile"]["reason"] == "compile: true in the study"
    assert m["compile"]["compiled_step_ms"] > 0 and m["compile"]["compile_s"] >= 0
    assert math.isfinite(m["val_loss"])


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_compiled_moe_traces_its_data_dependent_sizes_once(tiny_model, monkeypatch, threshold):
    """The MoE dispatch reads sizes from the data (adaptive top-k's used assignments; on a CPU the
    per-expert loop's counts), new ones every step: captured as unbacked sizes, with no graph break
    and no recompile for each (fixed top-k on a CPU made 23 graphs in 6 steps before)."""
    monkeypatch.setattr(autotune.train, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model = replace(tiny_model, num_experts=4, top_k=3, router_threshold=threshold, n_layers=2)
    with torch._dynamo.config.patch(capture_scalar_outputs=False):      # the trainer turns it on
        m = train(model, replace(QUICK, steps=6, eval_every=3, compile=True))
    assert m["compile"]["compiled"] and math.isfinite(m["val_loss"])
    assert (1 < m["experts_per_token"] < 3) if threshold else m["experts_per_token"] == 3
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= 3     # a block's graphs: training, evaluation, latency


def test_gradient_accumulation_takes_several_batches_per_step(tiny_model, monkeypatch):
    forwards = []

    class Counting(Transformer):
        def forward(self, tokens):
            if self.training:
                forwards.append(tokens.shape)
            return super().forward(tokens)

    monkeypatch.setattr(autotune.train, "build_model", Counting)
    metrics = train(tiny_model, replace(QUICK, steps=2, eval_every=0, grad_accum=4))
    assert metrics["steps"] == 2 and len(forwards) == 8


def test_same_seed_gives_the_same_run(tiny_model):
    a, b = (train(tiny_model, replace(QUICK, seed=1)) for _ in range(2))
    assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]


def test_text_files_train_with_token_budget_batches(tiny_model, lines_txt):
    cfg = replace(QUICK, task="text", data_path=str(lines_txt), eot_token=10, tokens_per_batch=128,
                  task_vocab=None)
    metrics = train(tiny_model, cfg)
    assert metrics["val_loss"] < math.log(256) + 0.5                      # near-uniform bytes at worst
    assert 0 <= metrics["accuracy"] <= 1


def test_fp16_with_loss_scaling_runs(tiny_model):
    metrics = train(tiny_model, replace(QUICK, steps=2, precision="fp16"))
    assert math.isfinite(metrics["val_loss"])


def test_the_expert_load_per_layer_and_expert_comes_back_for_the_report(tiny_model):
    metrics = train(replace(tiny_model, num_experts=4, n_layers=2), replace(QUICK, steps=3))
    load = metrics["expert_load"]
    assert len(load) == 2 and all(len(row) == 4 for row in load)
    assert all(sum(row) == pytest.approx(1.0, abs=1e-3) for row in load)


def test_the_report_draws_the_expert_load_of_a_really_trained_trial(tiny_model):
    import optuna

    from autotune.report.figures import expert_load
    metrics = train(replace(tiny_model, num_experts=4, n_layers=2), replace(QUICK, steps=3))
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=metrics["val_loss"], user_attrs={"metrics": metrics}))
    figure = expert_load(study)
    assert figure is not None
    assert [list(row) for row in figure.data[0].z] == metrics["expert_load"]


def test_progress_hears_of_steps_between_evaluations_and_never_decides(tiny_model):
    heard, reports = [], []
    train(tiny_model, replace(QUICK, steps=autotune.train.CHECK_EVERY + 4, eval_every=0),
          lambda step, m: reports.append(step) or True, progress=lambda step, m: heard.append((step, m)))
    steps = [step for step, _ in heard]
    assert steps[:2] == [1, 2] and autotune.train.CHECK_EVERY in steps     # warm-up, then each sync
    assert all(set(m) == {"train_loss"} and math.isfinite(m["train_loss"]) for _, m in heard)
    assert reports == [autotune.train.CHECK_EVERY + 4]                      # evaluations only


def test_evaluation_reports_the_experts_a_token_used(tiny_model):
    fixed = train(tiny_model, replace(QUICK, steps=2))
    adaptive = train(replace(tiny_model, top_k=4, router_threshold=0.5), replace(QUICK, steps=2))
    assert fixed["experts_per_token"] == 2.0
    assert 1.0 <= adaptive["experts_per_token"] < 4.0


def test_evaluation_reports_the_length_schedules_share(tiny_model):
    from autotune.model.attention import kept_share, scheduled_keep_ratio
    cfg = replace(tiny_model, keep_schedule="length", keep_short=0.9, keep_long=0.1, short_len=16, long_len=64)
    metrics = train(cfg, replace(QUICK, steps=2))
    T = QUICK.seq_len
    assert metrics["keep_ratio_used"] == pytest.approx(kept_share(T, 8, 16, scheduled_keep_ratio(T, 0.9, 0.1, 16, 64)))


@pytest.mark.parametrize("graphs, blocks_compiled, resets", [
    (0, False, False),      # nothing compiled yet
    (10, False, False),     # room left for the 8 graphs one eager trial can add (limit 24)
    (20, False, True),      # the next trial could reach the recompile limit
    (0, True, True),        # an earlier trial compiled its blocks: graphs guarded on its modules
])
def test_a_worker_keeps_earlier_trials_graphs_until_the_next_could_reach_the_limit(
        monkeypatch, graphs, blocks_compiled, resets):
    import autotune.model.attention as attention
    reset_calls = []
    monkeypatch.setattr(attention, "compiled_graph_count", lambda: graphs)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: reset_calls.append(1))
    monkeypatch.setattr(autotune.train._graphs, "blocks_compiled", blocks_compiled)
    with torch._dynamo.config.patch(recompile_limit=8, fail_on_recompile_limit_hit=False):
        assert autotune.train.begin_trial_graphs() is resets
        assert torch._dynamo.config.recompile_limit == autotune.train.RECOMPILE_LIMIT
        assert torch._dynamo.config.fail_on_recompile_limit_hit is True
    assert len(reset_calls) == int(resets)
    assert autotune.train._graphs.blocks_compiled is (blocks_compiled and not resets)


def test_active_parameters_flops_and_mfu_count_the_experts_that_ran_not_top_k(tiny_model):
    """Adaptive top-k: the counts follow the training steps' measured experts per token."""
    from autotune.train import PEAK_FLOPS, _Trainer
    model_cfg = replace(tiny_model, top_k=4, router_threshold=0.5)
    trainer = _Trainer(model_cfg, replace(QUICK, steps=3))
    rows = [trainer.step(i)[0].tolist() for i in range(3)]
    trainer.routed += [row[3] for row in rows]
    used = sum(row[3] for row in rows) / 3
    assert 1.0 <= used < 4.0
    model = trainer.model
    assert trainer.param_counts()["params_active"] == pytest.approx(model.num_parameters(True, active_experts=used))
    assert trainer.flops_per_token() == pytest.approx(model.flops_per_token(QUICK.seq_len, active_experts=used))
    assert trainer.flops_per_token() < model.flops_per_token(QUICK.seq_len)            # top_k = 4 would count more
    trainer.device = torch.device("cuda")                # MFU's arithmetic only; nothing runs there
    assert trainer.mfu(1e6) == pytest.approx(trainer.flops_per_token() * 1e6 / PEAK_FLOPS)


def test_the_reported_active_parameters_lie_between_one_expert_and_top_k(tiny_model):
    model_cfg = replace(tiny_model, top_k=4, router_threshold=0.5)
    metrics = train(model_cfg, replace(QUICK, steps=3))
    model = Transformer(replace(model_cfg, vocab_size=QUICK.task_vocab, max_seq_len=QUICK.seq_len))
    one, top_k = (model.num_parameters(True, active_experts=k) for k in (1, 4))
    assert one <= metrics["params_active"] < top_k
    fixed = train(tiny_model, replace(QUICK, steps=3))
    assert fixed["params_active"] == Transformer(replace(tiny_model, vocab_size=32, max_seq_len=32)).num_parameters(True)


def test_cost_batching_fits_its_model_on_steps_timed_alone_after_the_warm_up(tiny_model, lines_txt, monkeypatch):
    from autotune.data import CostProbe
    from autotune.train import COST_FIT_STEPS, TIMING_SKIP_STEPS
    probed = []
    add = CostProbe.add
    monkeypatch.setattr(CostProbe, "add", lambda self, shapes, s: probed.append(shapes) or add(self, shapes, s))
    cfg = replace(QUICK, task="text", data_path=str(lines_txt), eot_token=10, tokens_per_batch=128, task_vocab=None,
                  batching="cost", max_batch_size=16, grad_accum=2, steps=TIMING_SKIP_STEPS + COST_FIT_STEPS + 4)
    result = train(tiny_model, cfg)
    batching = result["batching"]
    assert batching["mode"] == "cost" and batching["fitted_at"] == TIMING_SKIP_STEPS + COST_FIT_STEPS
    assert len(probed) == COST_FIT_STEPS and all(len(shapes) == 2 for shapes in probed)   # micro-batches
    coefficients = [batching["fixed_s"], batching["per_token_s"], batching["per_pair_s"]]
    assert min(coefficients) >= 0 and max(coefficients) > 0
    assert batching["max_tokens"] == 256 and math.isfinite(result["val_loss"])


def test_token_batching_reports_no_cost_model(tiny_model, lines_txt):
    cfg = replace(QUICK, task="text", data_path=str(lines_txt), eot_token=10, tokens_per_batch=128, task_vocab=None)
    assert "batching" not in train(tiny_model, cfg)


def test_flops_and_mfu_of_variable_length_text_count_each_rows_own_attention(lines_txt):
    """Rows of 2-60 tokens padded together: attention FLOPs follow the real lengths (and the
    pattern's share at each padded length), not ``seq_len``; on fixed-length data both agree."""
    from autotune.train import _Trainer
    model_cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, num_experts=0, attention="sparse",
                            block_size=16, window=16, keep_ratio=0.5)
    cfg = replace(QUICK, task="text", data_path=str(lines_txt), eot_token=10, tokens_per_batch=128,
                  task_vocab=None, seq_len=64, steps=4)
    trainer = _Trainer(model_cfg, cfg)
    seen = []
    count = trainer.count_pairs
    trainer.count_pairs = lambda batch: seen.append(batch) or count(batch)
    for i in range(4):
        trainer.step(i)
    model = trainer.model
    expected_keys = sum(model.keep_share(b.inputs.shape[1]) * sum(
        n * (n + 1) / 2 for n in (b.targets != -100).sum(dim=1).tolist()) for b in seen) / sum(b.num_tokens for b in seen)
    assert trainer.flops_per_token() == pytest.approx(model.flops_per_token(64, visited_keys=expected_keys))
    assert trainer.flops_per_token() < model.flops_per_token(64)       # short rows visit fewer keys

    fixed = _Trainer(model_cfg, replace(QUICK, steps=2))               # the recall task: every row seq_len long
    fixed.step(0)
    assert fixed.flops_per_token() == pytest.approx(fixed.model.flops_per_token(QUICK.seq_len))
