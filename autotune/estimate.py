"""How long one trial of a study will take on this machine, to warn before hours are wasted.

Owns: the largest configuration a study can sample (every numeric knob at its top), its training
FLOPs per step (the model's own ``flops_per_token``), this machine's speed (one timed training step
where that is quick, else a timed matmul), and the warning ``autotune run`` prints before its first
trial when the estimate exceeds the study's timeout or an hour.
Must not know about: Optuna, the scheduler. It imports torch lazily: ``warning_for`` is called once
by the CLI; spec.py never imports this module.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from autotune.spec_types import StudySpec

HOUR_S = 3600.0
MAX_TIMED_STEP_S = 1.0       # time a real training step only when it should take at most this
CPU_MATMUL_EFFICIENCY = 0.35  # a small model's training step reaches ~this share of the matmul rate
GPU_ASSUMED_FLOPS = 0.2 * 792e12   # no CUDA in the parent: assume 20 % of an H100's bf16 peak
EVAL_SHARE = 1 / 3           # an evaluation batch (forward only) costs about a third of a step
SHOWN_KNOBS = ("d_model", "n_layers", "num_experts", "top_k", "d_ff", "seq_len", "batch_size")


@dataclass(frozen=True)
class Estimate:
    """One trial of the study's largest configuration on this machine."""

    trial_s: float
    step_s: float
    steps: int
    flops_per_step: float
    device: str                 # "cpu" or "gpu"
    threads: int | None         # CPU: torch threads of one worker
    how: str                    # "a timed step", "a timed matmul", "an assumed GPU speed"
    config: dict[str, Any]


def largest_config(spec: StudySpec) -> dict[str, Any]:
    """``trainer`` + ``fixed`` + every searched parameter at its most expensive value: the top of a
    numeric range, the largest numeric choice (else the first choice)."""
    config = {**spec.trainer_dict, **spec.fixed_dict}
    for p in spec.space.params:
        if p.type in ("float", "int"):
            config[p.name] = p.high
        else:
            numbers = [c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            config[p.name] = max(numbers) if numbers else p.choices[0]
    return config


def _configs(config: dict[str, Any]):
    from autotune.model.config import ModelConfig
    from autotune.train import TrainConfig
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    train_cfg = TrainConfig(**{k: v for k, v in config.items() if k in train_names})
    vocab = train_cfg.task_vocab or (64 if train_cfg.task == "mqar" else 256)
    model_cfg = ModelConfig(**{k: v for k, v in config.items() if k in ModelConfig.field_names()})
    return dataclasses.replace(model_cfg, vocab_size=vocab, max_seq_len=train_cfg.seq_len), train_cfg


def _tokens_per_step(train_cfg) -> int:
    per_batch = train_cfg.tokens_per_batch or train_cfg.batch_size * train_cfg.seq_len
    return per_batch * max(1, train_cfg.grad_accum)


def _flops_per_step(model_cfg, train_cfg) -> float:
    import torch

    from autotune.train import build_model, flops_per_token
    with torch.device("meta"):        # counts parameters without allocating them
        model = build_model(model_cfg)
    return flops_per_token(model, train_cfg.seq_len) * _tokens_per_step(train_cfg)


def _matmul_flops_per_s(bursts: int = 5, seconds: float = 0.04) -> float:
    """FLOP/s of 256 x 256 fp32 matmuls: the best of a few short bursts, so that a moment when
    other processes hold the cores does not count as this machine's speed."""
    import torch
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    best = 0.0
    for _ in range(bursts):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            done += 1
        best = max(best, done * 2 * 256 ** 3 / (time.perf_counter() - started))
    return best


def _timed_step_s(model_cfg, train_cfg) -> float:
    """Wall time of one training step (forward, backward, AdamW) on the CPU, after a small untimed one."""
    import torch
    import torch.nn.functional as F

    from autotune.train import build_model
    torch.manual_seed(0)
    model = build_model(model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = max(1, _tokens_per_step(train_cfg) // train_cfg.seq_len)
    seconds = 0.0
    for batch in (1, rows):   # a one-sequence step warms up (allocator, first calls), then the real one
        tokens = torch.randint(model_cfg.vocab_size, (batch, train_cfg.seq_len))
        started = time.perf_counter()
        logits, aux = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()) + aux.aux_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
    return seconds


def estimate(spec: StudySpec, gpu: bool, threads: int | None = None) -> Estimate:
    """The time of one trial of ``spec``'s largest configuration: FLOPs per step, then a timed
    step (CPU, when it should take under ``MAX_TIMED_STEP_S``), a timed matmul (CPU), or an
    assumed speed (GPU: CUDA is never started in the calling process)."""
    import torch
    config = largest_config(spec)
    model_cfg, train_cfg = _configs(config)
    flops = _flops_per_step(model_cfg, train_cfg)
    if gpu:
        step_s, how = flops / GPU_ASSUMED_FLOPS, "an assumed GPU speed (20 % of an H100's bf16 peak)"
    else:
        saved = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            step_s = flops / (_matmul_flops_per_s() * CPU_MATMUL_EFFICIENCY)
            how = "a timed matmul"
            if step_s <= MAX_TIMED_STEP_S:
                step_s, how = _timed_step_s(model_cfg, train_cfg), "a timed step"
        finally:
            torch.set_num_threads(saved)
    evals = math.ceil(train_cfg.steps / max(1, train_cfg.eval_every))
    trial_s = step_s * (train_cfg.steps + evals * train_cfg.eval_batches * EVAL_SHARE)
    shown = {k: config[k] for k in SHOWN_KNOBS if k in config}
    shown.setdefault("seq_len", train_cfg.seq_len)
    shown.setdefault("batch_size", train_cfg.batch_size)
    return Estimate(trial_s, step_s, train_cfg.steps, flops, "gpu" if gpu else "cpu",
                    None if gpu else threads, how, shown)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * HOUR_S:
        return f"{seconds / HOUR_S:.1f} h"
    return f"{seconds / 86400:.0f} days"


def warning_for(spec: StudySpec) -> str | None:
    """The warning ``autotune run`` prints before its first trial, or None when a trial of the
    largest configuration fits in the study's timeout and an hour (or cannot be estimated)."""
    if not spec.objective.startswith("builtin:"):
        return None   # a user's own function: nothing to measure
    from autotune.scheduler.gpus import plan_slots
    slots = plan_slots(spec.parallel)
    gpu = bool(slots) and slots[0].gpu is not None
    try:
        est = estimate(spec, gpu, None if gpu else slots[0].threads)
    except Exception:  # noqa: BLE001 - a configuration the model refuses fails in its trial, saying why
        return None
    limit = min(HOUR_S, spec.budget.timeout_s or HOUR_S)
    if est.trial_s <= limit:
        return None
    over = ("the study's timeout of " + format_duration(spec.budget.timeout_s)
            if spec.budget.timeout_s and spec.budget.timeout_s < HOUR_S else "an hour")
    where = ("warning: one trial may take ~{} on the GPU" if gpu else
             "warning: no GPU found: one trial may take ~{} on this CPU "
             f"({est.threads} torch thread{'s' if est.threads != 1 else ''} a trial)")
    knobs = " ".join(f"{k}={v}" for k, v in est.config.items())
    return (f"{where.format(format_duration(est.trial_s))}, more than {over} "
            f"(largest configuration {knobs}: {est.steps} steps of "
            f"~{format_duration(est.step_s) if est.step_s >= 1 else f'{est.step_s * 1000:.0f} ms'}, "
            f"from {est.how}). To shrink it: fewer trainer steps, a smaller seq_len, d_model, "
            f"n_layers or batch_size{'' if gpu else ', or a machine with a GPU'}. "
            "(--no-estimate skips this check.)")
