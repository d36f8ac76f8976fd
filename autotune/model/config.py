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
        top_k: experts each token is routed to (1..4, at most ``num_experts``).
        router: ``softmax`` or ``sigmoid`` gate scores.
        aux_loss_coef: weight of the load-balancing loss.
        shared_expert: add one always-on expert beside the routed ones.
        attention: ``sparse`` (window + selected blocks) or ``dense`` (plain causal).
        window: causal local window, in tokens.
        keep_ratio: share of the causal key blocks each query block visits (1.0 = all).
        block_size: tokens per attention block for selection and masks.
        dense_below: sequences shorter than this many tokens use dense causal attention on every
            device (below a crossover length dense flash attention is faster than the sparse
            kernel); 0 = always as configured.
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
    aux_loss_coef: float = 0.01
    shared_expert: bool = False
    attention: str = "sparse"
    window: int = 128
    keep_ratio: float = 0.5
    block_size: int = 128           # FlexAttention on torch 2.11 compiled fwd+bwd at 128, not 16 or 64
    dense_below: int = 0
    max_seq_len: int = 4096
    rope_base: float = 10000.0
    abs_positions: bool = False
    dropout: float = 0.0

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))
