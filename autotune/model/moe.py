"""Mixture-of-experts feed-forward: router, experts, load-balancing loss.

Owns: ``FeedForward`` (the dense SwiGLU FFN, also the shared expert), ``Router`` (scores, top-k
choice, routing weights, expert load, balance loss), ``Experts`` (the routed experts' weights and the
two ways of running them on tokens sorted by expert: one grouped matmul, or a loop over experts),
``MoE`` (routing + dispatch + combine + optional shared expert) and ``DenseFFN`` (a block's dense
FFN, ``num_experts == 1``). The two a block may hold share one interface: ``ffn(x) -> (out,
FFNAux)``, so the block never asks which kind it holds.
Must not know about: attention, training, Optuna.

Dispatch has no Python loop over tokens: the (token, expert) assignments are sorted by expert, the
tokens gathered in that order, each expert's contiguous segment multiplied by its weights
(``torch._grouped_mm`` where it runs; a loop over experts otherwise), and the results gathered back
into [token, k] order and mixed by the routing weights.

Adaptive top-k (``threshold`` > 0): a token's unused slots get weight 0 and sort past every expert's
segment (sentinel key E), so the n used assignments come first. Two layouts (``MoE.adaptive_layout``):
``compact`` (the default) gathers, runs and mixes those n rows only, so the dispatch's memory
traffic (gathers, SwiGLU, combine, and their gradients) and its activations scale with the experts
tokens use, not with ``top_k``; n is read by the host once a layer (``used_rows``: under
torch.compile an unbacked size, with ``capture_scalar_outputs`` on, so it never recompiles).
``static`` keeps the [N * top_k] rows (no sync, fixed shapes) and skips the rows past n on the
device: the grouped matmuls stop there, the SwiGLU's Triton kernels read n from the segment ends
(``moe_kernels``; they run the SwiGLU of fixed top-k too).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune.model.moe_kernels import swiglu


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's if it is on for x's device, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class FeedForward(nn.Module):
    """Dense SwiGLU FFN: ``w_out(silu(x W_gate) * (x W_up))``; d_model -> d_ff -> d_model."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * d_ff, bias=False)    # gate and up, fused
        self.w_out = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)


@dataclass
class FFNAux:
    """What a block's feed-forward reports besides its output (``DenseFFN`` and ``MoE`` alike)."""

    balance_loss: Tensor   # scalar float32: E * sum_i f_i P_i (1.0 at uniform load; 0 dense), not yet times the coef
    load: Tensor           # [E] fraction of the used assignments each expert got (f_i; [1.0] dense)
    experts_per_token: Tensor   # scalar float32: mean used slots per token (top_k when fixed; 1.0 dense)


@dataclass(kw_only=True)
class Routing(FFNAux):
    """One layer's routing decision for N tokens (with ``FFNAux``'s three fields)."""

    experts: Tensor        # [N, k] int64 chosen experts, best first
    weights: Tensor        # [N, k] float32 mixing weights (0 in unused slots)
    used: Tensor           # [N, k] bool: the slot runs (all True for fixed top-k)
    counts: Tensor         # [E] int64 used assignments per expert
    mean_prob: Tensor      # [E] mean router probability of each expert (P_i)


def balance_loss(load: Tensor, mean_prob: Tensor) -> Tensor:
    """Switch/GShard load-balancing loss ``E * sum_i f_i * P_i``; 1.0 when both are uniform."""
    return load.numel() * (load * mean_prob).sum()


class Router(nn.Module):
    """Scores every expert, keeps the top_k per token (or, with ``threshold`` p > 0, the fewest of
    them whose probabilities sum to at least p).

    softmax: weights are the chosen probabilities (renormalized over the used ones when k > 1).
    sigmoid: independent scores; weights the chosen scores (renormalized when k > 1); the balance
    loss, and the threshold, use the scores normalized to sum to 1 per token as P.
    """

    def __init__(self, d_model: int, num_experts: int, top_k: int, kind: str = "softmax",
                 threshold: float = 0.0):
        super().__init__()
        if kind not in ("softmax", "sigmoid"):
            raise ValueError(f"router must be 'softmax' or 'sigmoid', not {kind!r}")
        self.proj = nn.Linear(d_model, num_experts, bias=False)
        self.num_experts, self.top_k, self.kind, self.threshold = num_experts, top_k, kind, threshold

    def forward(self, x: Tensor) -> Routing:            # x: [N, d_model]
        logits = self.proj(x).float()                    # [N, E]
        if self.kind == "softmax":
            gate = probs = logits.softmax(-1)
        else:
            gate = logits.sigmoid()
            probs = gate / gate.sum(-1, keepdim=True)
        weights, experts = top_k(gate, self.top_k)        # [N, k], best first
        adaptive = self.threshold > 0
        if adaptive:
            used = slots_used(probs.gather(-1, experts), self.threshold)          # [N, k] bool
            weights = weights * used
        else:
            used = torch.ones_like(experts, dtype=torch.bool)
        if self.top_k > 1:
            weights = weights / weights.sum(-1, keepdim=True)
        counts = expert_counts(experts, self.num_experts, used if adaptive else None)
        load = counts.float() / counts.sum().clamp_min(1)
        mean_prob = probs.mean(0)
        return Routing(balance_loss=balance_loss(load, mean_prob), load=load,
                       experts_per_token=used.sum(-1).float().mean(), experts=experts, weights=weights,
                       used=used, counts=counts, mean_prob=mean_prob)


def slots_used(chosen_probs: Tensor, threshold: float) -> Tensor:
    """[N, k] bool: slot j is used while the probabilities of the slots before it sum to less than
    ``threshold`` (probabilities sorted best first): the fewest slots reaching it, at least 1."""
    before = chosen_probs.cumsum(-1) - chosen_probs                   # [N, k] exclusive prefix sums
    return before < threshold


def top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``scores.topk(k, dim=-1)`` for small k (top_k <= 4) as k rounds of max: under torch.compile one
    fused reduction over [N, E], where ``torch.topk`` launches a sort-based kernel per call."""
    values, indices = [], []
    for _ in range(k):
        value, index = scores.max(-1, keepdim=True)                  # [N, 1]
        values.append(value)
        indices.append(index)
        scores = scores.scatter(-1, index, float("-inf"))
    return torch.cat(values, -1), torch.cat(indices, -1)


def expert_counts(experts: Tensor, num_experts: int, used: Tensor | None = None) -> Tensor:
    """Used assignments per expert, [E] int64 (a scatter-add: unlike bincount its shape is static,
    so torch.compile keeps it in the graph)."""
    flat = experts.flatten()
    ones = torch.ones_like(flat) if used is None else used.flatten().long()
    return torch.zeros(num_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, ones)


class _Gather(torch.autograd.Function):
    """``x[index]`` whose backward is a gather too: ``index`` takes each row of x exactly ``repeats``
    times and ``inverse`` lists, for each x row, its ``repeats`` positions in the output. Autograd's
    own backward of ``x[index]`` is a sort-based scatter-add, several times slower."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, inverse: Tensor, repeats: int) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.repeats = repeats
        return x[index]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        rows = inverse.numel() // ctx.repeats
        return grad[inverse].view(rows, ctx.repeats, -1).sum(1), None, None, None


def grouped_mm_available(x: Tensor) -> bool:
    """``torch._grouped_mm`` on CUDA needs Hopper or newer and bf16 operands."""
    return (hasattr(torch, "_grouped_mm") and x.is_cuda and x.dtype == torch.bfloat16
            and torch.cuda.get_device_capability(x.device)[0] >= 9)


def used_rows(used: Tensor, slots: int, tokens: int) -> int:
    """The used assignments (``used``, their count on the device) as a size: a host sync eager, an
    unbacked size under torch.compile (``capture_scalar_outputs``), known to lie between one a token
    and ``slots``."""
    n = int(used.item())
    torch._check(n >= tokens)
    torch._check(n <= slots)
    return n


class _AdaptiveDispatch(torch.autograd.Function):
    """``x[token]``: the assignments' rows in expert order, the used ones first. Backward, a gather
    too: token t's gradient sums the rows at its used slots' positions ``slot_rows[t]`` (unused
    slots' positions, past the used rows, clamp to the ``last`` used row, read from cache, and are
    masked out: rows past it may hold anything)."""

    @staticmethod
    def forward(ctx, x: Tensor, token: Tensor, slot_rows: Tensor, used: Tensor, last: Tensor) -> Tensor:
        ctx.save_for_backward(slot_rows, used, last)
        return x[token]                                              # [rows, D]

    @staticmethod
    def backward(ctx, grad: Tensor):
        slot_rows, used, last = ctx.saved_tensors                    # [N, k], [N, k], [1]
        rows = grad[torch.minimum(slot_rows, last)]                  # [N, k, D]
        return torch.where(used.unsqueeze(-1), rows, 0).sum(1), None, None, None, None


class _AdaptiveCombine(torch.autograd.Function):
    """``out[t] = sum_j weights[t, j] * y[slot_rows[t, j]]`` over token t's used slots (weights are 0 at
    unused slots, whose rows clamp to the ``last`` used row). ``assignment[r]`` is the (token * k +
    slot) of row r; rows past the used ones get no gradient (their weight is 0)."""

    @staticmethod
    def forward(ctx, y: Tensor, slot_rows: Tensor, weights: Tensor, assignment: Tensor, last: Tensor) -> Tensor:
        ctx.save_for_backward(y, slot_rows, weights, assignment, last)
        picked = y[torch.minimum(slot_rows, last)]                   # [N, k, D]
        return (picked * weights.to(y.dtype).unsqueeze(-1)).sum(1)   # [N, D]

    @staticmethod
    def backward(ctx, grad: Tensor):
        y, slot_rows, weights, assignment, last = ctx.saved_tensors
        k = slot_rows.shape[1]
        row_weight = weights.flatten()[assignment].to(grad.dtype)    # [rows]
        grad_y = grad[assignment // k] * row_weight.unsqueeze(-1)    # [rows, D]
        picked = y[torch.minimum(slot_rows, last)]                   # [N, k, D]
        grad_weights = (picked.float() * grad.float().unsqueeze(1)).sum(-1)   # [N, k] (unused slots: masked
        return grad_y, None, grad_weights, None, None                        # by the router's weights * used)


class Experts(nn.Module):
    """``num_experts`` SwiGLU experts, weights stacked as [E, out, in] (like ``nn.Linear``)."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int):
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(num_experts, 2 * d_ff, d_model))
        self.w_out = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
        nn.init.normal_(self.w_in, std=d_model ** -0.5)
        nn.init.normal_(self.w_out, std=d_ff ** -0.5)
        # the grouped path's SwiGLU: "auto" = ``moe_kernels``' Triton kernels on CUDA, over the owned
        # rows (every layout; against Inductor's fused SwiGLU: bench/RESULTS.md), "torch" = plain ops
        self.swiglu_kernel = "auto"

    def forward(self, x_sorted: Tensor, counts: Tensor, impl: str = "auto") -> Tensor:
        """x_sorted: [M, d_model] rows grouped by expert, ``counts[e]`` rows each -> [M, d_model].
        Rows past ``counts.sum()`` (adaptive top-k's unused slots, where there are any) belong to no
        expert; what comes back there is undefined."""
        dtype = compute_dtype(x_sorted)
        x_sorted = x_sorted.to(dtype)
        if impl == "grouped" or (impl == "auto" and grouped_mm_available(x_sorted)):
            return self.forward_grouped(x_sorted, counts)
        return self.forward_loop(x_sorted, counts)

    def forward_grouped(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        """All experts in two grouped matmuls over contiguous segments (no host sync); on CUDA the
        SwiGLU between them runs over the rows some expert owns only (``moe_kernels``: the count is
        read on the device), so rows past them cost nothing."""
        offsets = counts.cumsum(0).to(torch.int32)                    # [E] segment ends
        w_in = self.w_in.to(x_sorted.dtype).transpose(-1, -2)         # [E, d_model, 2*d_ff]
        w_out = self.w_out.to(x_sorted.dtype).transpose(-1, -2)       # [E, d_ff, d_model]
        gu = torch._grouped_mm(x_sorted, w_in, offs=offsets)          # [M, 2*d_ff]: gate | up
        owned = offsets[-1:] if self.swiglu_kernel == "auto" and gu.is_cuda else None
        return torch._grouped_mm(swiglu(gu, owned), w_out, offs=offsets)  # [M, d_model]

    def forward_loop(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        """Reference: one plain matmul pair per expert on its segment (syncs to read counts)."""
        outputs, start = [], 0
        for e, n in enumerate(counts.tolist()):
            torch._check(n >= 0)          # compiled, the counts are unbacked sizes: slices need the bound
            seg = x_sorted[start:start + n]                           # [n, d_model]
            gate, up = (seg @ self.w_in[e].to(seg.dtype).T).chunk(2, dim=-1)
            outputs.append((F.silu(gate) * up) @ self.w_out[e].to(seg.dtype).T)
            start += n
        torch._check(x_sorted.shape[0] >= start)
        outputs.append(x_sorted.new_zeros(x_sorted.shape[0] - start, x_sorted.shape[1]))   # unused slots
        return torch.cat(outputs)


class DenseFFN(FeedForward):
    """A block's dense FFN behind the feed-forward interface: x [B, T, d_model] -> ([B, T, d_model],
    FFNAux with no balance loss, one expert's whole load, one expert a token)."""

    def forward(self, x: Tensor) -> tuple[Tensor, FFNAux]:
        ones = x.new_ones((), dtype=torch.float32)
        return super().forward(x), FFNAux(balance_loss=torch.zeros_like(ones), load=ones.view(1),
                                          experts_per_token=ones)

    def out_weights(self) -> list[Tensor]:
        """The weights that write into the residual stream (scaled down at init)."""
        return [self.w_out.weight]


class MoE(nn.Module):
    """Routed experts (+ optional shared expert). x: [B, T, d_model] -> ([B, T, d_model], Routing)."""

    def __init__(self, d_model: int, d_ff: int, num_experts: int, top_k: int, router: str = "softmax",
                 shared_expert: bool = False, router_threshold: float = 0.0):
        super().__init__()
        if top_k > num_experts:
            raise ValueError(f"top_k {top_k} is more than num_experts {num_experts}")
        self.router = Router(d_model, num_experts, top_k, router, router_threshold)
        self.experts = Experts(num_experts, d_model, d_ff)
        self.shared = FeedForward(d_model, d_ff) if shared_expert else None
        self.impl = "auto"      # "grouped" | "loop": tests and benchmarks pin one
        # adaptive top-k's dispatch (``_adaptive``): "compact" | "static"; on an H100 within noise of
        # each other, compact holding less memory (bench/RESULTS.md, "The SwiGLU kernels as custom ops")
        self.adaptive_layout = "compact"

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        B, T, D = x.shape
        flat = x.reshape(B * T, D)                                    # [N, D]
        routing = self.router(flat)
        k = routing.experts.shape[1]
        assignment = routing.experts.flatten()                        # [N*k], row r = (token r//k, slot r%k)
        adaptive = self.router.threshold > 0
        if adaptive:                                                  # unused slots sort last (sentinel E)
            assignment = assignment.masked_fill(~routing.used.flatten(), self.router.num_experts)
        order = assignment.argsort(stable=True)                       # assignments grouped by expert
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        if adaptive:
            out = self._adaptive(flat, routing, order, inverse.view(B * T, k))
        else:
            x_sorted = _Gather.apply(flat, order // k, inverse, k)    # [N*k, D], by expert
            y_sorted = self.experts(x_sorted, routing.counts, self.impl)   # [N*k, D]
            y = _Gather.apply(y_sorted, inverse, order, 1).view(B * T, k, D)   # back to (token, slot)
            # mix the k results; elementwise, not a batched [1, k] @ [k, D] matmul (a slow tiny-GEMM kernel)
            out = (y * routing.weights.to(y.dtype).unsqueeze(-1)).sum(1)   # [N, D]
        if self.shared is not None:
            out = out + self.shared(flat).to(out.dtype)
        return out.view(B, T, D), routing

    def _adaptive(self, flat: Tensor, routing: Routing, order: Tensor, slot_rows: Tensor) -> Tensor:
        """Adaptive top-k's dispatch: ``order`` lists the (token * k + slot) assignments in expert
        order, the used ones first; ``slot_rows`` [N, k] each slot's row there (past the used: unused).
        ``static``: every row of the [N * k] layout is gathered, the experts' SwiGLU and grouped
        matmuls stop at the used count read on the device (no sync, shapes fixed); ``compact``: the
        used rows only, their count read by the host (a sync a layer; under torch.compile an
        unbacked size)."""
        N, k = slot_rows.shape
        used = routing.counts.sum().view(1)                           # [1] on the device
        last = used - 1                                               # the last used row
        compact = self.adaptive_layout == "compact"
        if compact:
            order = order[:used_rows(used, order.numel(), N)]        # [n]
        x_sorted = _AdaptiveDispatch.apply(flat, order // k, slot_rows, routing.used, last)
        y_sorted = self.experts(x_sorted, routing.counts, self.impl)
        return _AdaptiveCombine.apply(y_sorted, slot_rows, routing.weights, order, last)   # [N, D]

    def out_weights(self) -> list[Tensor]:
        """The weights that write into the residual stream (scaled down at init)."""
        return [self.experts.w_out] + ([self.shared.w_out.weight] if self.shared is not None else [])
