"""The decoder-only transformer each trial trains: RMSNorm, rotary positions, sparse attention, MoE FFN.

Owns: ``Transformer`` (embedding, blocks, output head), ``Block``, ``CausalSelfAttention``,
rotary tables, parameter and FLOP counts, and ``ModelAux`` (what the forward pass reports besides
logits). Must not know about: Optuna, YAML, the training loop.

    >>> import torch
    >>> from autotune.model import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(vocab_size=32, d_model=32, n_heads=2, d_ff=32))
    >>> logits, aux = model(torch.randint(0, 32, (2, 16)))
    >>> tuple(logits.shape), tuple(aux.expert_load.shape)
    ((2, 16, 32), (2, 4))
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune.model.attention import keep_ratio_tensor, kept_share, scheduled_keep_ratio, sparse_attention
from autotune.model.config import ModelConfig
from autotune.model.moe import DenseFFN, MoE


@dataclass
class ModelAux:
    """What a forward pass reports besides the logits."""

    aux_loss: Tensor       # scalar: load-balancing losses summed over layers, times aux_loss_coef
    expert_load: Tensor    # [n_layers, num_experts] fraction of routed assignments per expert
    keep_share: float      # share of causal key blocks attention visited at this length (1.0 = dense)
    experts_per_token: Tensor   # scalar: routed experts a token used, mean over tokens and MoE
                                # layers (top_k unless router_threshold > 0; 1.0 without MoE layers)


def rotary_tables(seq_len: int, head_dim: int, base: float, device=None) -> tuple[Tensor, Tensor]:
    """cos, sin: [seq_len, head_dim // 2] for rotating (even, odd) halves of each head."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(seq_len, device=device, dtype=torch.float32).outer(inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, H, T, D]; rotates the pairs (x[..., :D/2], x[..., D/2:]) by position-dependent angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with rotary positions; dense or window + selected blocks."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        # the schedule's knobs as data (0-d, float64 as Python counts blocks): one compiled attention
        # graph serves every ratio a search tries; ``fixed`` is the schedule with both ends at keep_ratio
        fixed = cfg.keep_schedule == "fixed"
        knobs = {"keep_short": cfg.keep_ratio if fixed else cfg.keep_short,
                 "keep_long": cfg.keep_ratio if fixed else cfg.keep_long,
                 "log_short_len": math.log(cfg.short_len), "log_long_len": math.log(cfg.long_len)}
        for name, value in knobs.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float64), persistent=False)

    def keep_ratio_at(self, seq_len: int) -> float:
        """The schedule's ``keep_ratio`` for this length, on the host (decides dense vs sparse)."""
        cfg = self.cfg
        if cfg.keep_schedule == "fixed":
            return cfg.keep_ratio
        return scheduled_keep_ratio(seq_len, cfg.keep_short, cfg.keep_long, cfg.short_len, cfg.long_len)

    def keep_ratio(self, seq_len: int) -> Tensor:
        """The same ratio as a 0-d float64 tensor computed from the knob buffers (data, not a constant)."""
        if self.cfg.keep_schedule == "fixed":                  # the buffer itself: no kernels to launch
            return self.keep_short
        return keep_ratio_tensor(seq_len, self.keep_short, self.keep_long, self.log_short_len, self.log_long_len)

    def keep_share(self, seq_len: int) -> float:
        """Share of the causal key blocks visited at this length (1.0 = dense)."""
        cfg = self.cfg
        if cfg.attention == "dense":
            return 1.0
        return kept_share(seq_len, cfg.block_size, cfg.window, self.keep_ratio_at(seq_len))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # [B,H,T,D] each
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        cfg = self.cfg
        if self.keep_share(T) >= 1.0:                                   # dense, or a pattern that keeps all
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = sparse_attention(q, k, v, block_size=cfg.block_size, window=cfg.window,
                                 keep_ratio=self.keep_ratio(T))
        y = y.transpose(1, 2).reshape(B, T, C)                          # [B, T, C]
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)). The FFN is MoE unless num_experts == 1;
    either returns ``(out, FFNAux)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model)
        if cfg.num_experts > 1:
            self.ffn = MoE(cfg.d_model, cfg.d_ff, cfg.num_experts, cfg.top_k, cfg.router, cfg.shared_expert,
                           cfg.router_threshold)
        else:
            self.ffn = DenseFFN(cfg.d_model, cfg.d_ff)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> (x, balance loss (scalar), expert load [num_experts], experts per token (scalar))."""
        x = x + self.attn(self.attn_norm(x), cos, sin)
        out, ffn = self.ffn(self.ffn_norm(x))
        return x + self.dropout(out), ffn.balance_loss, ffn.load, ffn.experts_per_token


class Transformer(nn.Module):
    """Decoder-only LM. ``forward(tokens [B, T]) -> (logits [B, T, V], ModelAux)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError("d_model must split into n_heads heads of even size")
        if cfg.attention not in ("sparse", "dense"):
            raise ValueError(f"attention must be 'sparse' or 'dense', not {cfg.attention!r}")
        if cfg.keep_schedule not in ("fixed", "length"):
            raise ValueError(f"keep_schedule must be 'fixed' or 'length', not {cfg.keep_schedule!r}")
        if not 0 < cfg.short_len < cfg.long_len:
            raise ValueError(f"need 0 < short_len < long_len, not {cfg.short_len} and {cfg.long_len}")
        if not 0 <= cfg.router_threshold < 1:
            raise ValueError(f"router_threshold must be in [0, 1), not {cfg.router_threshold!r}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.abs_positions else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        # untied: tied to the embedding, the quickstart model stalled near 0.3 accuracy on
        # associative recall where the untied one solves it (tests/train_tests/test_learning.py)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rotary_tables(cfg.max_seq_len, cfg.d_model // cfg.n_heads, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)          # [max_seq_len, D/2]
        self.register_buffer("sin", sin, persistent=False)
        self.apply(self._init)
        for block in self.blocks:                                   # residual outputs start smaller
            for w in (block.attn.proj.weight, *block.ffn.out_weights()):
                nn.init.normal_(w, std=w.shape[-1] ** -0.5 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        # Fan-in scaled (not GPT-2's fixed 0.02): at the small widths a search visits (d_model 64),
        # 0.02 leaves attention logits near zero and the model stalls at chance on recall
        # (measured: 0.30 accuracy after 600 steps, against 1.00 after 300 with this init).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features ** -0.5)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)

    def forward(self, tokens: Tensor) -> tuple[Tensor, ModelAux]:
        B, T = tokens.shape
        if T > self.cos.shape[0]:
            cos, sin = rotary_tables(T, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base, tokens.device)
        else:
            cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed(tokens)                                      # [B, T, d_model]
        if self.positions is not None:
            x = x + self.positions(torch.arange(T, device=tokens.device))
        balances, loads, per_token = [], [], []
        for block in self.blocks:
            x, balance, load, experts = block(x, cos, sin)
            balances.append(balance)
            loads.append(load)
            per_token.append(experts)
        logits = self.head(self.norm(x))                            # [B, T, V]
        aux = ModelAux(aux_loss=self.cfg.aux_loss_coef * torch.stack(balances).sum(),
                       expert_load=torch.stack(loads),
                       keep_share=self.keep_share(T),
                       experts_per_token=torch.stack(per_token).mean())
        return logits, aux

    def keep_share(self, seq_len: int) -> float:
        """Share of the causal key blocks attention visits at this length (1.0 = dense)."""
        return self.blocks[0].attn.keep_share(seq_len) if self.blocks else 1.0

    def num_parameters(self, active: bool = False, active_experts: float | None = None) -> float:
        """All parameters; ``active``: counting only the routed experts a token uses: ``top_k``, or
        ``active_experts`` (the realised mean ``ModelAux.experts_per_token`` of an adaptive router:
        then a float)."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        for block in self.blocks:
            if isinstance(block.ffn, MoE):
                experts = block.ffn.experts
                per_expert = (experts.w_in.numel() + experts.w_out.numel()) // self.cfg.num_experts
                used = block.ffn.router.top_k if active_experts is None else active_experts
                total -= per_expert * (self.cfg.num_experts - used)
        return total

    def flops_per_token(self, seq_len: int, active_experts: float | None = None,
                        visited_keys: float | None = None) -> float:
        """Training FLOPs (forward + backward) per token: 6 x active matmul parameters (embedding
        lookup and norms excluded; routed experts: ``top_k`` or the realised ``active_experts``, see
        ``num_parameters``) + attention's q.k and p.v over the keys the pattern visits
        (12 x layers x d_model x mean visited keys per query: at ``seq_len``, or ``visited_keys``
        where the caller counted them over batches of varying lengths)."""
        embeddings = self.embed.weight.numel() + (self.positions.weight.numel() if self.positions is not None else 0)
        matmul_params = self.num_parameters(active=True, active_experts=active_experts) - embeddings - sum(
            m.weight.numel() for m in self.modules() if isinstance(m, nn.RMSNorm))
        if visited_keys is None:
            visited_keys = self.keep_share(seq_len) * (seq_len + 1) / 2
        return 6.0 * matmul_params + 12.0 * self.cfg.n_layers * self.cfg.d_model * visited_keys
