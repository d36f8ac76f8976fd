"""Every training knob and every metric the built-in trainer reports, without importing torch.

Owns: ``TrainConfig`` and ``BUILTIN_METRICS``, which the study-file checks (``autotune/spec.py``) read
and ``autotune/train.py`` uses (and re-exports). Must not know about: torch, Optuna, YAML.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

BUILTIN_METRICS = (
    "val_loss",          # mean cross-entropy on the validation set's target positions (nats/token)
    "accuracy",          # share of validation target positions predicted exactly (argmax)
    "train_loss",        # mean training cross-entropy over the steps since the previous evaluation
    "tokens_per_s",      # training throughput, real (unpadded) input tokens per second
    "step_ms",           # mean wall time of one optimizer step (all micro-batches), warm-up left out
    "peak_mem_mb",       # CUDA: peak allocated memory; CPU: the process's peak resident set
    "params_total",      # every parameter
    "params_active",     # parameters one token passes through: the routed experts that ran (top_k, or
                         # fewer with router_threshold > 0: the training steps' mean experts a token used)
    "expert_load_cv",    # coefficient of variation of tokens per expert, mean over layers; 0 = balanced
                         # (besides the metrics, MoE models return ``expert_load``: [layer][expert] shares)
    "keep_ratio_used",   # share of causal key blocks the sparse attention visited (at seq_len)
    "experts_per_token", # routed experts a token used, mean over tokens and layers (top_k unless
                         # router_threshold > 0)
    "latency_ms",        # median ms of one forward pass, batch 1, one sequence of seq_len tokens
    "latency",           # the same value as latency_ms (the flat spec form's name)
    "mfu",               # CUDA: model FLOPs utilization against PEAK_FLOPS, counting the experts that
                         # ran (as params_active); 0 on CPU
    "steps",             # optimizer steps taken (fewer than TrainConfig.steps when stopped early)
    "train_s",           # wall seconds of the whole run, evaluations included; where they went is
                         # the result's ``time_s`` mapping (setup, compile, train, eval, latency, report)
)

# Returned only at the end of a run, never in the reports at evaluations: a rule that judges the
# curves (the pareto pruner) cannot see them.
BUILTIN_FINAL_METRICS = ("latency_ms", "latency", "mfu", "steps", "train_s")

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
BATCHINGS = ("tokens", "cost")
DEVICES = ("auto", "cpu", "cuda")
SHARDINGS = ("ddp", "fsdp")


@dataclass(frozen=True)
class TrainConfig:
    """Every training knob, by the name a search space or a study's ``trainer:`` block uses.

    Args:
        task: ``mqar`` (built-in associative recall) or ``text`` (a ``.txt`` / ``.bin`` file).
        data_path: the token file for ``text``.
        seq_len: input tokens per sequence (also the model's ``max_seq_len`` and the latency length).
        num_pairs: key-value pairs per ``mqar`` sequence.
        num_queries: ``mqar`` queries per sequence (default ``num_pairs``: each key asked once; more
            ask keys again, giving more answers to learn from per sequence).
        task_vocab: ``mqar`` vocabulary (default 64); for ``text`` it overrides the file's (256 for
            ``.txt``, largest token + 1 for ``.bin``). The model's ``vocab_size`` is set from it.
        eot_token: ``text``: the token that ends each document (e.g. 10: one document per line).
        val_fraction: ``text``: share of the file (its tail) held out for validation.
        steps: optimizer steps.
        eval_every: steps between evaluations (each one calls ``report``); the last step always evaluates.
        eval_batches: validation batches per evaluation.
        lr: peak learning rate.
        warmup_fraction: share of ``steps`` for linear warm-up, unless ``warmup_steps`` is given.
        warmup_steps: warm-up steps; overrides ``warmup_fraction``.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio`` at the last step.
        weight_decay: AdamW decoupled decay on matrices and embeddings (not norms or biases).
        beta1, beta2: AdamW moment coefficients.
        grad_clip: clip the global gradient norm to this; 0 disables.
        batch_size: sequences per micro-batch (``mqar``); for ``text`` the default token budget is
            ``batch_size * seq_len``.
        tokens_per_batch: ``text``: padded tokens per micro-batch, batches grouping similar lengths.
        batching: ``text``: ``tokens`` (every batch within ``tokens_per_batch`` padded tokens) or
            ``cost``: after the warm-up the loop times a few steps, fits a per-batch cost model to them
            (tokens plus attention pairs: quadratic in length, times the keep share when sparse; see
            ``autotune.data.BatchCost``) and from then on lets each batch cost what a token-budget
            batch of full-length pieces costs, so batches of short pieces hold more tokens. The
            synthetic ``mqar`` task has one length (``batch_size`` sequences a batch): ``cost`` is
            refused there.
        max_batch_size: ``batching: cost``: most sequences a batch holds (None: no cap).
        max_batch_tokens: ``batching: cost``: most padded tokens a batch holds, the memory budget
            (default 2 x the token budget).
        grad_accum: micro-batches per optimizer step.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16`` (with loss scaling), ``fp32``.
        compile: ``auto`` (on CUDA: compile when the steps left after a short timed eager start
            would save more than the compile costs; see ``compile_choice``), True or False.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: seeds the model's initialization and the data.
        threads: CPU threads for torch; 0 chooses (``OMP_NUM_THREADS`` if set, else 1 on a 1-2 core
            machine, else half the cores; see ``configure_threads``).
        sharding: a trial over several ranks (``parallel.gpus_per_trial`` / ``procs_per_trial``):
            ``ddp`` (each rank holds the whole model) or ``fsdp`` (FSDP2 ``fully_shard``: parameters,
            gradients and optimizer state split over the ranks). Alone on one process: ignored.
    """

    task: str = "mqar"
    data_path: str | None = None
    seq_len: int = 128
    num_pairs: int = 8
    num_queries: int | None = None
    task_vocab: int | None = None
    eot_token: int | None = None
    val_fraction: float = 0.1
    steps: int = 200
    eval_every: int = 50
    eval_batches: int = 4
    lr: float = 3e-3
    warmup_fraction: float = 0.1
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_size: int = 32
    tokens_per_batch: int | None = None
    batching: str = "tokens"
    max_batch_size: int | None = None
    max_batch_tokens: int | None = None
    grad_accum: int = 1
    precision: str = "auto"
    compile: str | bool = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    sharding: str = "ddp"

    def __post_init__(self) -> None:
        checks = [
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("compile", self.compile in ("auto", True, False), "'auto', true or false"),
            ("device", self.device in DEVICES, f"one of {DEVICES}"),
            ("sharding", self.sharding in SHARDINGS, f"one of {SHARDINGS}"),
            ("steps", self.steps >= 1, "at least 1"),
            ("grad_accum", self.grad_accum >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("eval_batches", self.eval_batches >= 1, "at least 1"),
            ("seq_len", self.seq_len >= 2, "at least 2"),
            ("lr", self.lr > 0, "positive"),
            ("warmup_fraction", 0 <= self.warmup_fraction < 1, "in [0, 1)"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("batching", self.batching in BATCHINGS, f"one of {BATCHINGS}"),
            ("batching", self.batching != "cost" or self.task == "text",
             f"'tokens' for task {self.task!r}: 'cost' batches variable-length text (task: text), and "
             f"{self.task!r} has sequences of one length, batch_size of them a batch"),
            ("max_batch_size", self.max_batch_size is None or self.max_batch_size >= 1, "at least 1"),
            ("max_batch_tokens", self.max_batch_tokens is None or self.max_batch_tokens >= self.seq_len,
             f"at least seq_len ({self.seq_len})"),
        ]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be {need}")

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @property
    def warmup(self) -> int:
        """Warm-up length in steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(self.warmup_fraction * self.steps)
