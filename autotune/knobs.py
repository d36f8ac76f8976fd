"""Other names of the built-in objective's knobs, and the machine-sized defaults of the flat form.

Owns: the one table of aliases (``learning_rate`` -> ``lr``, ``sparsity`` -> ``keep_ratio`` as
``1 - sparsity``, ...) that ``spec.py`` applies wherever a knob is named, so that the study, the
store and every output use the canonical name; and the model / trainer settings a flat study gets
where it says nothing about them (``flat_defaults``).
Must not know about: torch, Optuna. The canonical names themselves are the fields of
``autotune.model.ModelConfig`` and ``autotune.train.TrainConfig``.

Example::

    >>> canonical("learning_rate"), canonical("sparsity"), canonical("lr")
    (('lr', False), ('keep_ratio', True), ('lr', False))
"""
from __future__ import annotations

from typing import Any

# alias -> canonical knob name; one line per knob, the names other tools and papers use
ALIASES: dict[str, str] = {
    **dict.fromkeys(("learning_rate", "lr_max", "max_lr", "peak_lr"), "lr"),
    **dict.fromkeys(("batch", "bs", "micro_batch_size"), "batch_size"),
    **dict.fromkeys(("max_steps", "num_steps", "iterations", "train_steps", "total_steps"), "steps"),
    **dict.fromkeys(("eval_interval", "eval_steps"), "eval_every"),
    **dict.fromkeys(("warmup", "num_warmup_steps"), "warmup_steps"),
    **dict.fromkeys(("max_grad_norm", "clip_grad", "gradient_clipping"), "grad_clip"),
    **dict.fromkeys(("gradient_accumulation_steps", "accumulation_steps"), "grad_accum"),
    **dict.fromkeys(("seq_length", "sequence_length", "context_length"), "seq_len"),
    **dict.fromkeys(("hidden_size", "width", "dim", "n_embd", "d_hidden", "embed_dim"), "d_model"),
    **dict.fromkeys(("layers", "num_layers", "depth", "n_layer", "num_hidden_layers"), "n_layers"),
    **dict.fromkeys(("heads", "num_heads", "n_head", "num_attention_heads"), "n_heads"),
    **dict.fromkeys(("ffn_dim", "d_ffn", "ff_dim", "intermediate_size", "ffn_hidden_size"), "d_ff"),
    **dict.fromkeys(("experts", "n_experts", "num_local_experts", "n_routed_experts"), "num_experts"),
    **dict.fromkeys(("topk", "top-k", "experts_per_token", "num_experts_per_tok"), "top_k"),
    **dict.fromkeys(("load_balancing_coef", "router_aux_loss_coef", "balance_coef"), "aux_loss_coef"),
    **dict.fromkeys(("window_size", "sliding_window", "local_window"), "window"),
    **dict.fromkeys(("sparsity", "sparsity_ratio"), "keep_ratio"),
    **dict.fromkeys(("sparsity_schedule", "keep_ratio_schedule"), "keep_schedule"),
    **dict.fromkeys(("topk_threshold", "routing_threshold", "top_p_routing", "router_top_p"), "router_threshold"),
    **dict.fromkeys(("dropout_rate", "dropout_prob"), "dropout"),
}

# aliases whose value is 1 - the canonical value (a sparsity of 0.8 keeps 0.2 of the blocks)
COMPLEMENTS = frozenset({"sparsity", "sparsity_ratio"})


def canonical(name: str) -> tuple[str, bool]:
    """``(canonical name, complemented)``: complemented means value = 1 - the alias's value."""
    return ALIASES.get(name, name), name in COMPLEMENTS


def complement(value: Any) -> Any:
    """``1 - value`` for a number, rounded so that ``1 - 0.7`` reads 0.3; anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return round(1.0 - value, 12)


# --- the flat form's defaults ---------------------------------------------------------------------
# Where a flat study names no model or trainer setting, it trains one of these. CPU: the quickstart
# study's size (studies/quickstart.yaml) with 150 steps instead of 300: a batch of 256 sequences
# (the top of the flat example's batch_size range) takes ~0.6 s a step on one core of a 2-core CPU
# (measured), so such a trial still ends in about 2 minutes. GPU: the middle configuration of
# studies/moe_sparse.yaml (its space's middle d_model, experts and depth).
CPU_DEFAULTS: dict[str, dict[str, Any]] = {
    "trainer": {"task": "mqar", "seq_len": 64, "num_pairs": 4, "num_queries": 16, "task_vocab": 32,
                "steps": 150, "eval_every": 50, "batch_size": 32},
    "fixed": {"d_model": 64, "n_layers": 2, "n_heads": 2, "d_ff": 128, "window": 16, "block_size": 8},
}
GPU_DEFAULTS: dict[str, dict[str, Any]] = {
    "trainer": {"task": "mqar", "seq_len": 2048, "num_pairs": 64, "task_vocab": 256, "steps": 2000,
                "eval_every": 100, "batch_size": 32, "precision": "bf16"},
    "fixed": {"d_model": 384, "n_layers": 4, "n_heads": 8, "d_ff": 1024, "num_experts": 8, "top_k": 2,
              "block_size": 128},
}


# the settings that size the mqar task: a flat study on another task (text) gets none of them
MQAR_KNOBS = ("num_pairs", "num_queries", "task_vocab")


def flat_defaults(gpu: bool) -> dict[str, dict[str, Any]]:
    """``{"trainer": {...}, "fixed": {...}}`` of a flat study that names none, with or without GPU."""
    chosen = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    return {section: dict(values) for section, values in chosen.items()}
