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

from autotune.model.attention import effective_keep_share, sparse_attention
from autotune.model.config import ModelConfig
from autotune.model.moe import MoE, FeedForward


@dataclass
class ModelAux:
    """What a forward pass reports besides the logits."""

    aux_loss: Tensor       # scalar: load-balancing losses summed over layers, times aux_loss_coef
    expert_load: Tensor    # [n_layers, num_experts] fraction of routed assignments per expert
    keep_ratio: float      # share of causal key blocks attention visited (1.0 = dense)


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
        # keep_ratio as data (0-d, float64 as Python counts blocks): one compiled attention graph
        # serves every ratio a search tries
        self.register_buffer("keep_ratio", torch.tensor(cfg.keep_ratio, dtype=torch.float64), persistent=False)

    def keep_share(self, seq_len: int) -> float:
        cfg = self.cfg
        if cfg.attention == "dense":
            return 1.0
        return effective_keep_share(seq_len, cfg.block_size, cfg.window, cfg.keep_ratio, cfg.dense_below)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # [B,H,T,D] each
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        cfg = self.cfg
        if self.keep_share(T) >= 1.0:                                   # dense, or a pattern that keeps all
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = sparse_attention(q, k, v, block_size=cfg.block_size, window=cfg.window,
                                 keep_ratio=self.keep_ratio)
        y = y.transpose(1, 2).reshape(B, T, C)                          # [B, T, C]
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)). The FFN is MoE unless num_experts == 1."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model)
        if cfg.num_experts > 1:
            self.ffn = MoE(cfg.d_model, cfg.d_ff, cfg.num_experts, cfg.top_k, cfg.router, cfg.shared_expert)
        else:
            self.ffn = FeedForward(cfg.d_model, cfg.d_ff)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (x, balance loss (scalar), expert load [num_experts])."""
        x = x + self.attn(self.attn_norm(x), cos, sin)
        h = self.ffn_norm(x)
        if isinstance(self.ffn, MoE):
            out, routing = self.ffn(h)
            balance, load = routing.balance_loss, routing.load
        else:
            out = self.ffn(h)
            balance, load = x.new_zeros((), dtype=torch.float32), x.new_ones(1, dtype=torch.float32)
        return x + self.dropout(out), balance, load


class Transformer(nn.Module):
    """Decoder-only LM. ``forward(tokens [B, T]) -> (logits [B, T, V], ModelAux)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError("d_model must split into n_heads heads of even size")
        if cfg.attention not in ("sparse", "dense"):
            raise ValueError(f"attention must be 'sparse' or 'dense', not {cfg.attention!r}")
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
            for w in (block.attn.proj.weight, *self._ffn_out_weights(block.ffn)):
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

    @staticmethod
    def _ffn_out_weights(ffn: nn.Module) -> list[Tensor]:
        if isinstance(ffn, MoE):
            return [ffn.experts.w_out] + ([ffn.shared.w_out.weight] if ffn.shared is not None else [])
        return [ffn.w_out.weight]

    def forward(self, tokens: Tensor) -> tuple[Tensor, ModelAux]:
        B, T = tokens.shape
        if T > self.cos.shape[0]:
            cos, sin = rotary_tables(T, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_base, tokens.device)
        else:
            cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed(tokens)                                      # [B, T, d_model]
        if self.positions is not None:
            x = x + self.positions(torch.arange(T, device=tokens.device))
        balances, loads = [], []
        for block in self.blocks:
            x, balance, load = block(x, cos, sin)
            balances.append(balance)
            loads.append(load)
        logits = self.head(self.norm(x))                            # [B, T, V]
        aux = ModelAux(aux_loss=self.cfg.aux_loss_coef * torch.stack(balances).sum(),
                       expert_load=torch.stack(loads),
                       keep_ratio=self.blocks[0].attn.keep_share(T) if self.blocks else 1.0)
        return logits, aux

    def num_parameters(self, active: bool = False) -> int:
        """All parameters; ``active``: counting only the top_k of the routed experts."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        for block in self.blocks:
            if isinstance(block.ffn, MoE):
                experts = block.ffn.experts
                per_expert = (experts.w_in.numel() + experts.w_out.numel()) // self.cfg.num_experts
                total -= per_expert * (self.cfg.num_experts - block.ffn.router.top_k)
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token: 6 x active matmul parameters (embedding
        lookup and norms excluded) + attention's q.k and p.v over the keys the pattern visits
        (12 x layers x d_model x mean visited keys per query)."""
        embeddings = self.embed.weight.numel() + (self.positions.weight.numel() if self.positions is not None else 0)
        matmul_params = self.num_parameters(active=True) - embeddings - sum(
            m.weight.numel() for m in self.modules() if isinstance(m, nn.RMSNorm))
        share = self.blocks[0].attn.keep_share(seq_len) if self.blocks else 1.0
        visited_keys = share * (seq_len + 1) / 2
        return 6.0 * matmul_params + 12.0 * self.cfg.n_layers * self.cfg.d_model * visited_keys
