"""The training loop of one trial: data + model from two configs, train, evaluate, report, measure.

Owns: ``train()`` (AdamW with warm-up and cosine decay, gradient clipping and accumulation, bf16
autocast or fp16 with loss scaling, ``torch.compile`` of the repeated blocks where it pays for
itself, periodic evaluation through a ``report(step, metrics) -> keep_going`` callback) and the
metrics a trial reports. ``TrainConfig`` (every training knob, by the name a search space uses) and the metric names (``BUILTIN_METRICS``) live in ``train_config.py``
(no torch there, for the study-file checks) and are re-exported here.
Must not know about: Optuna, YAML, the scheduler. Pruning is only ever ``report`` returning False.

Example:
    >>> from autotune.model import ModelConfig
    >>> metrics = train(ModelConfig(d_model=64), TrainConfig(steps=20, eval_every=10))  # doctest: +SKIP
    >>> metrics["accuracy"], metrics["latency_ms"]                                     # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from autotune.compile_ahead import CompileAhead
from autotune.compile_policy import PROBE_STEPS, CompileCosts, auto_compiles, compile_choice
from autotune.data import IGNORE_INDEX, Batch, CostProbe, build_dataset, prefetch
from autotune.distributed import (full_tensor, gradient_sync, rank0_decides,  # issue 21: several ranks
                                  shard_batches, world, wrap_model)
from autotune.train_config import BUILTIN_METRICS, DEVICES, PRECISIONS, TrainConfig  # noqa: F401 - re-exported
from autotune.model.config import ModelConfig

Report = Callable[[int, dict[str, float]], bool]

PEAK_FLOPS = 792e12          # H100 bf16 dense matmul ceiling we measured (issue 3); the MFU yardstick
TIMING_SKIP_STEPS = 2        # first steps left out of step time (compilation, allocator warm-up)
CHECK_EVERY = 32             # steps between host syncs that check the loss (and always at evaluations)
LATENCY_RUNS = 5             # timed forward passes for latency; the median is reported
COST_FIT_STEPS = 8           # batching: cost: steady steps timed one by one to fit the batch cost model
COMPILE_BACKEND = "inductor"  # torch.compile's backend for the blocks (tests: a cheaper one on CPU)


class TrainingDiverged(RuntimeError):
    """The loss (or, without loss scaling, the gradient norm) became NaN or infinite."""

    def __init__(self, step: int, value: float, what: str = "loss") -> None:
        super().__init__(f"training diverged: {what} is {value} at step {step}")
        self.step, self.value, self.what = step, value, what


def lr_multiplier(step: int, *, steps: int, warmup: int, min_lr_ratio: float) -> float:
    """Learning-rate factor for 0-based optimizer ``step``: linear warm-up to 1, then cosine to ``min_lr_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - 1 - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """The trial's model (imported here so that the data and the schedule work without it)."""
    from autotune.model import Transformer
    return Transformer(cfg)


# --- devices, precision, threads --------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None for fp32, use a GradScaler)``."""
    if precision == "auto":
        if device.type != "cuda":
            return None, False
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, True), "fp32": (None, False)}[precision]


def configure_threads(threads: int, device: torch.device) -> None:
    """Give torch ``threads`` CPU threads (0: choose).

    The choice: ``OMP_NUM_THREADS`` where set (a scheduler running several CPU workers should set
    it to cores / workers); otherwise one thread on a machine of 1-2 cores, where a study runs
    trials side by side and oversubscribed threads made steps 5-10x slower (measured), else half the
    cores this process may use. On CUDA the default is left alone.
    """
    if threads <= 0:
        if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = 1 if cores <= 2 else cores // 2
    torch.set_num_threads(threads)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decay on matrices and embeddings only (norm gains and biases are left alone)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


# --- loss, evaluation, measurements ------------------------------------------------------------

def target_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on target positions only (``IGNORE_INDEX`` elsewhere), in fp32."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def expert_load_cv(expert_load: torch.Tensor | None) -> float:
    """Coefficient of variation (std / mean) of a ``[n_layers, E]`` load, averaged over layers."""
    if expert_load is None or expert_load.numel() == 0 or expert_load.shape[-1] < 2:
        return 0.0
    load = expert_load.float()
    cv = load.std(dim=-1, unbiased=False) / load.mean(dim=-1).clamp_min(1e-12)
    return float(cv.mean())


def _has_dropout(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def evaluate(model: torch.nn.Module, batches: list[Batch], device: torch.device, autocast,
             *, training_graph: bool = False) -> dict[str, float]:
    """Validation loss and accuracy on target positions, with the expert load and keep ratio seen.

    ``training_graph``: run the forward passes as training runs them (autograd on, train mode when
    the model has no dropout to switch off), outputs detached at once, so that compiled code reuses
    the graph training compiled: Dynamo guards on grad mode and on ``module.training``, and an
    evaluation under ``no_grad`` would compile a second graph (measured: 11.5 s a trial on an H200).
    """
    switch = not training_graph or _has_dropout(model)
    if switch:
        model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count, keep_sum, load_sum = 0, 0.0, None
    experts_sum = torch.zeros((), device=device)
    try:
        for batch in batches:
            batch = batch.to(device)
            with torch.set_grad_enabled(training_graph), autocast():
                logits, aux = model(batch.inputs)
            logits, load = logits.detach(), getattr(aux, "expert_load", None)
            with torch.no_grad():
                mask = batch.targets != IGNORE_INDEX
                loss_sum += target_loss(logits, batch.targets, reduction="sum")
                correct += ((logits.argmax(-1) == batch.targets) & mask).sum()
                count += int(mask.sum())
                if load is not None:
                    load_sum = load.detach().float() if load_sum is None else load_sum + load.detach().float()
                experts_sum += getattr(aux, "experts_per_token", 1.0)
            keep_sum += float(getattr(aux, "keep_share", 1.0))
            del logits, aux                                   # frees the saved activations now
    finally:
        if switch:
            model.train()
    metrics = {"val_loss": float(loss_sum) / max(count, 1), "accuracy": float(correct) / max(count, 1),
               "expert_load_cv": expert_load_cv(load_sum), "keep_ratio_used": keep_sum / len(batches),
               "experts_per_token": float(experts_sum) / len(batches)}
    if load_sum is not None and load_sum.dim() == 2 and load_sum.shape[-1] >= 2:
        # [n_layers][num_experts] share of routed assignments (the report's expert-load view)
        metrics["expert_load"] = [[round(v, 4) for v in row] for row in (load_sum / len(batches)).tolist()]
    return metrics


@torch.no_grad()
def measure_latency_ms(model: torch.nn.Module, seq_len: int, vocab_size: int, device: torch.device,
                       autocast, runs: int = LATENCY_RUNS) -> tuple[float, float]:
    """``(median ms of one forward pass of one seq_len-token sequence (batch 1), seconds of the two
    untimed warm-up passes)``. The warm-up is where a compiled model builds its batch-1 inference
    graph: a caller accounts it as compile time, not latency."""
    model.eval()
    tokens = latency_tokens(seq_len, vocab_size, device)
    times, warmup_s = [], 0.0
    for i in range(runs + 2):                       # two untimed runs warm caches (and compile)
        _sync(device)
        start = time.perf_counter()
        with autocast():
            model(tokens)
        _sync(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
        else:
            warmup_s += time.perf_counter() - start
    model.train()
    return statistics.median(times), warmup_s


def latency_tokens(seq_len: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """The latency pass's input: one ``seq_len``-token sequence, the same in every trial."""
    return torch.randint(vocab_size, (1, seq_len), device=device,
                         generator=torch.Generator(device=device).manual_seed(0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # Linux: KiB


def count_parameters(model: torch.nn.Module, active: bool, active_experts: float | None = None) -> float:
    """Parameters of ``model``; ``active``: those one token passes through, counting ``active_experts``
    routed experts (the measured mean; None: ``top_k``)."""
    if hasattr(model, "num_parameters"):            # a model of one's own may not take active_experts
        extra = {} if active_experts is None else {"active_experts": active_experts}
        return float(model.num_parameters(active=active, **extra))
    return float(sum(p.numel() for p in model.parameters()))


def flops_per_token(model: torch.nn.Module, seq_len: int, active_experts: float | None = None,
                    visited_keys: float | None = None) -> float:
    """Training FLOPs (forward + backward) per token over ``active_experts`` routed experts (None:
    ``top_k``) and ``visited_keys`` keys a query visited on average (None: as at ``seq_len``); 6 x
    active parameters if the model cannot say."""
    if hasattr(model, "flops_per_token"):
        extra = {} if active_experts is None else {"active_experts": active_experts}
        if visited_keys is not None:
            extra["visited_keys"] = visited_keys
        return float(model.flops_per_token(seq_len, **extra))
    return 6.0 * count_parameters(model, active=True)


# --- the loop ------------------------------------------------------------------------------------

class _StepClock:
    """Wall time and tokens of the optimizer steps, measured between host syncs (the loop syncs
    every step while warming up, then every ``CHECK_EVERY`` steps and at evaluations, so that the
    GPU may run ahead of Python in between). Steps are counted per mode (``eager`` / ``compiled``),
    warm-up steps (the first ones of each mode: compilation, allocator and kernel warm-up) apart.
    Mode ``ahead``: eager steps while a helper process compiles the blocks, all counted as warm-up
    against the eager steady step (any slow-down, e.g. from sharing the CPU, is the compile's cost)."""

    STEADY = {"ahead": "eager"}     # the mode whose steady step a mode's warm-up is measured against

    def __init__(self) -> None:
        self.mode = "eager"
        self.totals: dict[tuple[str, bool], list[float]] = {}    # (mode, warm-up) -> [s, steps, tokens]

    def add(self, seconds: float, steps: int, tokens: int, *, warmup: bool) -> None:
        totals = self.totals.setdefault((self.mode, warmup or self.mode == "ahead"), [0.0, 0, 0])
        totals[0] += seconds
        totals[1] += steps
        totals[2] += tokens

    def step_s(self, mode: str) -> float | None:
        """Mean seconds of a steady step in ``mode`` (None: none measured)."""
        seconds, steps, _ = self.totals.get((mode, False), (0.0, 0, 0))
        return seconds / steps if steps else None

    @property
    def step_seconds(self) -> float:
        return sum(t[0] for t in self.totals.values())

    def compile_s(self, only: tuple[str, ...] | None = None) -> float:
        """Warm-up time beyond what those steps would have taken steady: compilation and the like
        (of every mode, or of the modes ``only`` names)."""
        extra = 0.0
        for (mode, warm), (seconds, steps, _) in self.totals.items():
            if warm and (only is None or mode in only):
                steady = self.step_s(self.STEADY.get(mode, mode))
                extra += max(0.0, seconds - steps * steady) if steady is not None else 0.0
        return extra

    def rates(self) -> dict[str, float]:
        """Step time and throughput of the current mode's steady steps (its warm-up if none yet; the
        latest mode's that ran any, when it has not run yet: an evaluation right at the switch to
        compiled steps)."""
        mode = self.STEADY.get(self.mode, self.mode)
        keys = [(mode, False), (mode, True), *reversed(self.totals)]
        seconds, steps, tokens = next((self.totals[k] for k in keys if self.totals.get(k, (0, 0))[1]), (0.0, 0, 0))
        return {"step_ms": 1e3 * seconds / max(1, steps),
                "tokens_per_s": tokens / seconds if seconds > 0 else 0.0}


RECOMPILE_LIMIT = 24         # Dynamo's graphs per function in a worker (default 8), see begin_trial_graphs
GRAPHS_PER_EAGER_TRIAL = 8   # FlexAttention graphs an eager trial can add: training, evaluation and latency
                             # shapes, up to attention.STATIC_SHAPES per head layout, then dynamic ones


@dataclass
class _WorkerGraphs:
    """What this process has compiled since its last ``torch._dynamo.reset()``."""
    blocks_compiled: bool = False


_graphs = _WorkerGraphs()


def begin_trial_graphs() -> bool:
    """Before a CUDA trial: keep the compiled graphs of earlier trials in this process, or reset
    Dynamo. Returns True when it reset.

    A worker trains many trials. An eager trial compiles only FlexAttention, whose graphs are keyed
    on what really differs between trials (shapes, window, block size, grad mode; keep_ratio is
    data), so a trial like an earlier one reuses them instead of paying 0.6-1.8 s to rebuild them
    (issue 15). Dynamo is reset when the next trial could reach the recompile limit with them, or
    when an earlier trial compiled the model's blocks (graphs guarded on that trial's modules).
    Hitting the limit always fails loudly instead of running FlexAttention unfused (3-20x slower
    steps that would bias every latency and pruning decision)."""
    from autotune.model.attention import compiled_graph_count, forget_shapes

    forget_shapes()
    config = torch._dynamo.config
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
    limit = max(getattr(config, name), RECOMPILE_LIMIT)
    setattr(config, name, limit)
    if _graphs.blocks_compiled or compiled_graph_count() + GRAPHS_PER_EAGER_TRIAL > limit:
        torch._dynamo.reset()
        _graphs.blocks_compiled = False
        return True
    return False


class _Trainer:
    """One run's state: device, precision, data, model, optimizer; one method per phase."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = device = resolve_device(cfg.device)
        configure_threads(cfg.threads, device)
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")      # TF32 for fp32 matmuls, deliberately
            torch.backends.cudnn.allow_tf32 = True
            torch.cuda.reset_peak_memory_stats(device)
            begin_trial_graphs()
        self.dtype, self.use_scaler = resolve_precision(cfg.precision, device)
        self.data = build_dataset(
            cfg.task, seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed,
            eval_batches=cfg.eval_batches, num_pairs=cfg.num_pairs, num_queries=cfg.num_queries,
            task_vocab=cfg.task_vocab, data_path=cfg.data_path, tokens_per_batch=cfg.tokens_per_batch,
            eot_token=cfg.eot_token, val_fraction=cfg.val_fraction)
        torch.manual_seed(cfg.seed)
        self.model = build_model(replace(model_cfg, vocab_size=self.data.vocab_size,
                                         max_seq_len=cfg.seq_len)).to(device)
        self.model.train()
        # issue 21: across a trial's ranks, DDP or FSDP2 (in place: before the optimizer); alone: the model
        self.step_model = wrap_model(self.model, cfg.sharding)
        self.optimizer = make_optimizer(self.model, cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.use_scaler)
        self.compiled = False
        self.val_batches = self.data.val_batches()
        batches = shard_batches(self.data.train_batches())   # issue 21: this rank's share of each batch
        self.train_batches = prefetch(batches, pin_memory=True) if device.type == "cuda" else batches
        self.params_total = count_parameters(self.model, active=False)
        self.routed: list[float] = []       # routed experts per token of each training step so far
        self.visited_pairs = 0.0            # (query, key) pairs attention visited among real tokens, and
        self.pair_tokens = 0                # the real tokens of those batches: for FLOPs at varying lengths
        self._shares: dict[int, float] = {}

    def compile(self) -> None:
        """Compile the model by regions: each repeated block (the graph is traced once and serves
        every layer, so compile time does not grow with depth); embedding, head and loss stay eager.
        The synthetic task has fixed shapes (static graphs); text batches vary (dynamic)."""
        self._graph_settings()
        for module in self._regions():
            module.compile(dynamic=self._dynamic(), backend=COMPILE_BACKEND)
        self.compiled = True
        _graphs.blocks_compiled = True

    def _regions(self) -> list[torch.nn.Module]:
        blocks = getattr(self.model, "blocks", None)
        return list(blocks) if blocks is not None else [self.model]

    def _dynamic(self) -> bool | None:
        return None if self.cfg.task == "text" else False

    @staticmethod
    def _graph_settings() -> None:
        """Dynamo settings the model's graphs need, before they are traced: the MoE dispatch reads
        sizes from the device (adaptive top-k's used assignments; the per-expert loop's counts, on
        CPUs), unbacked sizes when captured, where a graph break recompiles for every new count."""
        torch._dynamo.config.capture_scalar_outputs = True

    def compile_ahead(self) -> tuple[CompileAhead | None, str]:
        """A ``CompileAhead`` for this run's first block, or None and why the compile must stall
        the trial instead: several ranks (their forward passes are collective), a model without
        alike blocks, or too little free GPU memory for the helper (its CUDA context and a copy of
        one block's forward and backward)."""
        if world()[1] > 1:
            return None, "several ranks"
        blocks = getattr(self.model, "blocks", None)
        if not blocks:
            return None, "no repeated blocks"
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            need = 2**30 + 2 * (peak - torch.cuda.memory_allocated(self.device)) / len(blocks)
            if free < need:
                return None, f"{free / 2**20:.0f} MiB free < {need / 2**20:.0f} MiB for the helper"
        autocast = (self.device.type, self.dtype) if self.dtype is not None else None
        self._graph_settings()
        return CompileAhead(blocks[0], autocast=autocast, backend=COMPILE_BACKEND, dynamic=self._dynamic()), ""

    def latency_forward(self) -> None:
        """A forward pass as ``measure_latency_ms`` runs it (outputs dropped; ``CompileAhead``
        stops it at the first block, whose inputs it records)."""
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                self.model(latency_tokens(self.cfg.seq_len, self.data.vocab_size, self.device))
        finally:
            self.model.train()

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, step: int) -> tuple[torch.Tensor, int]:
        """Optimizer step ``step`` (0-based) over ``grad_accum`` micro-batches.

        Returns ``([train CE, loss, grad norm, routed experts per token] on the device, tokens)`` without waiting for the
        device; the caller checks the values for divergence at its next sync (``check_finite``)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_multiplier(step, steps=cfg.steps, warmup=cfg.warmup,
                                                 min_lr_ratio=cfg.min_lr_ratio)
        ce_sum, loss_sum, experts_sum, tokens = 0.0, 0.0, 0.0, 0
        self.last_shapes = []                  # (batch size, padded length) of each micro-batch
        for micro in range(cfg.grad_accum):
            batch = next(self.train_batches).to(self.device)
            self.last_shapes.append(tuple(batch.inputs.shape))
            # issue 21: DDP all-reduces the gradients at the last micro-batch only
            with gradient_sync(self.step_model, last=micro == cfg.grad_accum - 1):
                with self.autocast():
                    logits, aux = self.step_model(batch.inputs)
                    ce = target_loss(logits, batch.targets)
                    loss = ce + aux.aux_loss
                self.scaler.scale(loss / cfg.grad_accum).backward()
            ce_sum, loss_sum = ce_sum + ce.detach(), loss_sum + loss.detach()
            per_token = getattr(aux, "experts_per_token", None)          # a model without experts: NaN
            experts_sum = experts_sum + (per_token.detach().float() if per_token is not None else math.nan)
            tokens += batch.num_tokens
            self.count_pairs(batch)
        self.scaler.unscale_(self.optimizer)
        grad_norm = full_tensor(   # issue 21: FSDP2's norm is a DTensor
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf))
        experts = experts_sum / cfg.grad_accum
        experts = experts if torch.is_tensor(experts) else grad_norm.new_tensor(experts, dtype=torch.float32)
        stats = torch.stack([ce_sum / cfg.grad_accum, loss_sum / cfg.grad_accum, grad_norm.float(), experts])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return stats, tokens

    def check_finite(self, first_step: int, stats: list[list[float]]) -> list[float]:
        """Raise ``TrainingDiverged`` at the first of these steps whose loss (or, without loss
        scaling, whose gradient norm: fp16 skips such steps by design) is not finite; else return
        their train CE values. ``stats`` rows are ``step``'s results, from ``first_step`` (1-based)."""
        for step, (ce, loss, norm, _) in enumerate(stats, start=first_step):
            if not math.isfinite(loss):
                raise TrainingDiverged(step, loss)
            if not self.use_scaler and not math.isfinite(norm):
                raise TrainingDiverged(step, norm, what="gradient norm")
        return [row[0] for row in stats]

    def evaluate(self) -> dict[str, float]:
        # On CUDA attention always runs compiled code (FlexAttention), so evaluate as training runs
        return evaluate(self.model, self.val_batches, self.device, self.autocast,
                        training_graph=self.device.type == "cuda")

    def latency(self) -> tuple[float, float]:
        return measure_latency_ms(self.model, self.cfg.seq_len, self.data.vocab_size, self.device,
                                  self.autocast)

    def cost_probe(self) -> CostProbe | None:
        """``batching: cost``: the probe that fits the batch cost model (None: token batching)."""
        if self.cfg.batching != "cost":
            return None
        share = getattr(self.model, "keep_share", None)            # sparse attention's share at each length
        return CostProbe(COST_FIT_STEPS, share=share)

    def batch_by_cost(self, probe: CostProbe) -> dict:
        """Fit the probe's cost model and batch by it from now on; what was fitted, for the result."""
        cost = probe.fit()
        self.data.use_batch_cost(cost, max_batch_size=self.cfg.max_batch_size,
                                 max_tokens=self.cfg.max_batch_tokens)
        return {"fixed_s": cost.fixed, "per_token_s": cost.per_token, "per_pair_s": cost.per_pair,
                "max_tokens": self.data.max_tokens, "max_batch_size": self.cfg.max_batch_size}

    def active_experts(self) -> float | None:
        """Routed experts a token used, mean over the training steps so far (None before any):
        ``top_k`` unless ``router_threshold`` > 0 lets confident tokens use fewer."""
        routed = [r for r in self.routed if math.isfinite(r)]
        return statistics.fmean(routed) if routed else None

    def param_counts(self) -> dict[str, float]:
        """``params_total`` and ``params_active`` (over the experts that ran: ``active_experts``)."""
        return {"params_total": self.params_total,
                "params_active": count_parameters(self.model, active=True, active_experts=self.active_experts())}

    def count_pairs(self, batch: Batch) -> None:
        """Add ``batch``'s attention pairs (its causal pairs x the share the pattern keeps at its
        length) and real tokens to the trial's totals."""
        length = int(batch.inputs.shape[1])
        if length not in self._shares:
            keep_share = getattr(self.model, "keep_share", None)
            self._shares[length] = float(keep_share(length)) if keep_share is not None else 1.0
        self.visited_pairs += self._shares[length] * batch.causal_pairs
        self.pair_tokens += batch.num_tokens

    def flops_per_token(self) -> float:
        """Training FLOPs per token, over the experts that ran and the keys attention visited in the
        batches trained on (variable-length text: each row's own length, not ``seq_len``)."""
        visited = self.visited_pairs / self.pair_tokens if self.pair_tokens else None
        return flops_per_token(self.model, self.cfg.seq_len, active_experts=self.active_experts(),
                               visited_keys=visited)

    def mfu(self, tokens_per_s: float) -> float:
        if self.device.type != "cuda":
            return 0.0
        return self.flops_per_token() * tokens_per_s / PEAK_FLOPS


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, report: Report | None = None,
          compile_costs: CompileCosts | None = None,
          progress: Callable[[int, dict[str, float]], None] | None = None) -> dict:
    """Train ``model_cfg`` on ``train_cfg``'s task and return the final metrics (``BUILTIN_METRICS``).

    ``report(step, metrics)`` is called after each evaluation (every ``eval_every`` steps and at the
    last) with the metrics so far; returning False stops training at once, and the metrics so far
    are returned, without the latency measurement (a stopped trial's latency is no one's objective).
    NaN or infinite loss raises ``TrainingDiverged`` (checked at the host syncs: every warm-up step,
    every ``CHECK_EVERY`` steps and at each evaluation). The model's ``vocab_size`` and
    ``max_seq_len`` are set from the data. ``progress(step, {"train_loss": ...})``, if given, hears
    of every host sync between evaluations (the first steps, then every ``CHECK_EVERY`` steps): for a
    live view, never for pruning.

    Besides the metrics (floats) the result holds two mappings: ``time_s``, where the run's wall
    time went (seconds: ``setup``, ``compile``, ``train``, ``eval``, ``latency``, ``report``; they sum
    to ``train_s``), and ``compile``, what was compiled and why (``compile: auto`` decides after
    ``PROBE_STEPS`` timed eager steps, from ``compile_costs``: see ``compile_choice``). With
    ``batching: cost`` it holds a third, ``batching``: the step it switched to cost batches at
    (``fitted_at``, None if the run ended first) and the fitted cost model (seconds: ``fixed_s`` a
    batch, ``per_token_s``, ``per_pair_s`` an attention pair). The ``COST_FIT_STEPS`` steps that fit
    it are the first ones after the warm-up (and after ``compile: auto``'s decision and its warm-up),
    each timed alone.
    """
    started = time.perf_counter()
    cfg = train_cfg
    trainer = _Trainer(model_cfg, cfg)
    time_s = {"setup": time.perf_counter() - started, "compile": 0.0, "train": 0.0, "eval": 0.0,
              "latency": 0.0, "report": 0.0}
    costs = compile_costs or CompileCosts()
    auto_here = auto_compiles(trainer.device)
    mode = cfg.compile if auto_here else (cfg.compile is True)
    choice = {"mode": cfg.compile if isinstance(cfg.compile, bool) else "auto", "compiled": False,
              "reason": "" if auto_here or cfg.compile is True else "eager on CPU",
              "attention": model_cfg.attention}
    decide_at = None
    if mode is True:
        trainer.compile()
        choice.update(compiled=True, reason="compile: true in the study")
    elif mode == "auto" and cfg.steps > TIMING_SKIP_STEPS + PROBE_STEPS:
        decide_at = TIMING_SKIP_STEPS + PROBE_STEPS
    elif mode == "auto":
        choice["reason"] = f"auto: {cfg.steps} steps are too few to pay for a compile"
    elif not choice["reason"]:
        choice["reason"] = "compile: false in the study"
    probe = trainer.cost_probe()
    batching = {"mode": cfg.batching, "fitted_at": None} if probe is not None else None
    clock, losses, metrics = _StepClock(), [], {}
    clock.mode = "compiled" if trainer.compiled else "eager"
    warm_until = TIMING_SKIP_STEPS
    ahead: CompileAhead | None = None      # compiling in a helper process, while the steps run eager
    pending: list[torch.Tensor] = []       # stats of the steps since the last sync
    tick, tokens, stopped, step = time.perf_counter(), 0, False, 0
    try:
        for step in range(1, cfg.steps + 1):
            stats, n = trainer.step(step - 1)
            pending.append(stats)
            tokens += n
            if ahead is not None and not ahead.started and ahead.captured:
                ahead.start()
            evaluate_now = step == cfg.steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0)
            warming = step <= warm_until
            probing = (probe is not None and not probe.done and not warming
                       and (decide_at is None or step > decide_at))   # steady steps, each timed alone
            switch = ahead is not None and ahead.done                 # its graphs are ready
            if not (warming or probing or evaluate_now or switch or step % CHECK_EVERY == 0 or step == decide_at):
                continue
            rows = torch.stack(pending).tolist()                      # the sync
            elapsed = time.perf_counter() - tick
            clock.add(elapsed, len(pending), tokens, warmup=warming)
            if probing and len(rows) == 1:
                probe.add(trainer.last_shapes, elapsed)
                if probe.done:
                    batching.update(trainer.batch_by_cost(probe), fitted_at=step)
            new_losses = trainer.check_finite(step - len(pending) + 1, rows)
            losses += new_losses
            trainer.routed += [row[3] for row in rows]
            pending, tokens = [], 0
            if progress is not None and not evaluate_now:
                progress(step, {"train_loss": statistics.fmean(new_losses)})
            if step == decide_at:
                eager_s = clock.step_s("eager")
                ahead, why_not = trainer.compile_ahead()
                # issue 21: ranks time their own steps; all follow rank 0, so all run the same code
                go, choice["reason"] = rank0_decides(
                    compile_choice("auto", cfg.steps - step, eager_s or 0.0, costs, ahead=ahead is not None))
                if not go:
                    ahead = None
                elif ahead is not None:               # compile in a helper process, train eager meanwhile
                    choice["ahead"] = True
                    ahead.capture()
                    ahead.capture_eval(trainer.latency_forward)
                    clock.mode = "ahead"
                else:
                    choice["ahead"] = f"no: {why_not}"
                    trainer.compile()
                    choice["compiled"], clock.mode, warm_until = True, "compiled", step + TIMING_SKIP_STEPS
            elif switch:
                choice["ahead_s"] = round(ahead.seconds, 3)
                if ahead.phases:
                    choice["ahead_phases"] = ahead.phases
                choice["ahead_helper"] = "reused" if ahead.reused else "started"
                if not ahead.ok:                      # compile here as without a helper
                    choice["ahead"] = f"failed, compiled here: {ahead.error}"[:500]
                ahead.stop()
                ahead = None
                trainer.compile()                     # the blocks' first calls load the helper's graphs
                choice["compiled"], clock.mode, warm_until = True, "compiled", step + TIMING_SKIP_STEPS
            if evaluate_now:
                tick = time.perf_counter()
                metrics = {**trainer.evaluate(), "train_loss": statistics.fmean(losses), **clock.rates(),
                           "peak_mem_mb": peak_memory_mb(trainer.device), **trainer.param_counts()}
                losses = []
                time_s["eval"] += time.perf_counter() - tick
                tick = time.perf_counter()
                keep_going = report is None or report(step, dict(metrics)) is not False
                time_s["report"] += time.perf_counter() - tick
                if not keep_going:
                    stopped = True
                    break
            tick = time.perf_counter()
    finally:
        if hasattr(trainer.train_batches, "close"):
            trainer.train_batches.close()
        if ahead is not None:                 # the run ended before the helper did: it has no use now
            if ahead.started:
                choice["reason"] += "; the run ended before the compile did"
            ahead.stop()
    time_s["compile"] = clock.compile_s()
    time_s["train"] = clock.step_seconds - time_s["compile"]
    final = {**metrics, "steps": float(step), "mfu": trainer.mfu(metrics.get("tokens_per_s", 0.0))}
    if not stopped:
        tick = time.perf_counter()
        latency, warmup_s = trainer.latency()
        time_s["compile"] += warmup_s                  # the batch-1 inference graph, if compiled
        time_s["latency"] = time.perf_counter() - tick - warmup_s
        final.update(latency_ms=latency, latency=latency)
    final["peak_mem_mb"] = peak_memory_mb(trainer.device)
    final["train_s"] = time.perf_counter() - started
    # the bookkeeping between phases (loss checks at host syncs, progress callbacks, the choice to
    # compile), so that the parts are the whole run
    time_s["other"] = max(0.0, final["train_s"] - sum(time_s.values()))
    time_s = {k: round(v, 4) for k, v in time_s.items()}
    for side in ("eager", "compiled"):
        step_s = clock.step_s(side)
        choice[f"{side}_step_ms"] = round(step_s * 1e3, 3) if step_s is not None else None
    if choice["compiled"]:            # what compiling cost the trial: the warm-up of the compiled steps
        # (with a helper: loading its graphs) and the eager steps' slow-down while it compiled
        choice["compile_s"] = round(clock.compile_s(("ahead", "compiled")), 3)
        if choice.get("ahead") is True:          # of which the switch: loading the helper's graphs
            choice["load_s"] = round(clock.compile_s(("compiled",)), 3)
    result = {**final, "time_s": time_s, "compile": choice}
    return result if batching is None else {**result, "batching": batching}
