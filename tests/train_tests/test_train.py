"""The training loop: configuration, schedule, reporting, stopping, divergence and metrics."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch

import autotune.train
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
            "grad_accum", "precision", "compile", "device", "seed", "threads"} <= names
    assert not names & ModelConfig.field_names()        # the objective splits parameters by name


@pytest.mark.parametrize("field, value", [("precision", "fp8"), ("compile", "yes"), ("device", "tpu"),
                                          ("steps", 0), ("grad_accum", 0), ("lr", -1.0)])
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
    assert set(BUILTIN_METRICS) <= set(metrics)


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
    phases = ("setup_s", "warmup_s", "eval_s", "report_s", "finish_s")
    assert all(m[p] >= 0 for p in phases)
    assert m["report_s"] >= 3 * 0.05
    steady = m["step_ms"] * (m["steps"] - autotune.train.TIMING_SKIP_STEPS) / 1e3
    assert sum(m[p] for p in phases) + steady <= m["train_s"] * 1.05   # nothing counted twice


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
