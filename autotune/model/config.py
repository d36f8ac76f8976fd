"""The model's configuration: every knob the search can turn, with defaults.

Owns: the ``ModelConfig`` dataclass. Knows nothing of Optuna or YAML; ``autotune/objective.py``
fills it from a trial's parameters by field name.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ModelConfig:
    """Decoder-only MoE transformer with dynamic sparse attention.

    Args:
        vocab_size: tokens in the vocabulary (the data sets it; 256 for bytes).
        d_model: residual width.
        n_layers: transformer blocks.
        n_heads: attention heads; ``d_model`` must be divisible by it.
        d_ff: hidden width of each expert (and of the shared expert).
        num_experts: routed experts per MoE layer; 1 gives a plain dense FFN.
        top_k: experts each token is routed to (1..4, at most ``num_experts``); with
            ``router_threshold`` the most it is routed to.
        router_threshold: adaptive top-k, in [0, 1): 0 routes every token to ``top_k`` experts;
            p > 0 routes each token to the fewest of its top experts whose routing probabilities
            (softmax, or sigmoid scores normalised to sum to 1) sum to at least p, at least 1 and
            at most ``top_k``; weights are renormalised over the experts used.
        router: ``softmax`` or ``sigmoid`` gate scores.
        aux_loss_coef: weight of the load-balancing loss.
        shared_expert: add one always-on expert beside the routed ones.
        attention: ``sparse`` (window + selected blocks) or ``dense`` (plain causal).
        window: causal local window, in tokens.
        keep_schedule: ``fixed`` (every length keeps ``keep_ratio``) or ``length`` (short
            sequences keep more: ``keep_short`` at or below ``short_len`` tokens, ``keep_long`` at
            or above ``long_len``, linear in log length between). Dense below a crossover length N
            (the former ``dense_below: N``) is ``keep_short: 1.0, short_len: N - 1, long_len: N``.
        keep_ratio: ``fixed``: share of the causal key blocks each query block visits (1.0 = all).
        keep_short, keep_long, short_len, long_len: ``length``: the schedule's two ends.
        block_size: tokens per attention block for selection and masks.
        max_seq_len: longest sequence the rotary tables cover.
        rope_base: rotary base frequency.
        abs_positions: also add a learned absolute position embedding to the token embedding
            (rotary alone gives the residual stream no position; small models learn
            recall faster with it).
        dropout: dropout on attention output and FFN output.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    num_experts: int = 4
    top_k: int = 2
    router: str = "softmax"
    router_threshold: float = 0.0
    aux_loss_coef: float = 0.01
    shared_expert: bool = False
    attention: str = "sparse"
    window: int = 128
    keep_schedule: str = "fixed"
    keep_ratio: float = 0.5
    keep_short: float = 0.8
    keep_long: float = 0.2
    short_len: int = 256
    long_len: int = 1024
    block_size: int = 128           # FlexAttention on torch 2.11 compiled fwd+bwd at 128, not 16 or 64
    max_seq_len: int = 4096
    rope_base: float = 10000.0
    abs_positions: bool = False
    dropout: float = 0.0

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))
