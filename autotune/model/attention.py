"""Dynamic sparse causal attention: a local window plus the key blocks a cheap scorer ranks highest.

Owns: the block selection (``select_blocks``), the sparse pattern it defines, and three ways to
compute attention under that pattern: the plain masked reference (every device; the CPU path), the
FlexAttention path (CUDA; block masks built from indices inside one compiled graph, on the sequence
padded to whole groups of ``PAD_BLOCKS`` blocks, ``padded``) and dense causal
attention (``keep_ratio >= 1`` or ``attention: dense``); and the length schedule of the kept share
(``scheduled_keep_ratio``: ``keep_short`` for short sequences, ``keep_long`` for long ones).
Must not know about: MoE, training, Optuna.

``keep_ratio`` may be a 0-d tensor (the model passes one): the number of blocks each query block keeps
is then computed on the device, so one compiled FlexAttention graph serves every ratio a search tries
(a Python float would be baked into the graph as a constant, one recompile per ratio). The length
schedule keeps that property: the model computes the ratio for a length from its knobs held as 0-d
tensors (``keep_ratio_tensor``), the length itself being the only constant (a static shape).

The pattern, for a sequence cut into blocks of ``block_size`` tokens (query block ``i``, key block ``j``):
- the diagonal block ``j == i`` is attended causally (token level);
- the window blocks ``i - window_blocks < j < i`` are always kept, whole: every query sees at least
  its last ``window`` tokens (the window is rounded up to whole blocks);
- of the remaining causal blocks ``j <= i - window_blocks``, the top-scoring ones are kept, whole,
  until ``kept_blocks(i) = clamp(ceil(keep_ratio * (i + 1)), window_blocks, i + 1)`` blocks in all;
- the scorer is mean-pooled ``q . k``: keys pooled per block, queries pooled over the ``block_size``
  positions that END at the block's first token (not over the block itself, which would let later
  queries of a block choose what its earlier queries see). So selection is causal: no choice for a
  position depends on anything after it.
Every key block other than the diagonal is either fully attended or skipped, so the FlexAttention
block mask has exactly one partial block per row (the diagonal) and all others "full" (no mask_mod).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import Tensor


# ----------------------------------------------------------------------------------------------
# The pattern: how many blocks each query block keeps (deterministic) and which (data-dependent)
# ----------------------------------------------------------------------------------------------
def window_blocks(window: int, block_size: int) -> int:
    """Key blocks (the diagonal included) that a query block must keep to cover ``window`` tokens."""
    return 1 + math.ceil(max(window - 1, 0) / block_size)


def kept_blocks(n_blocks: int, block_size: int, window: int, keep_ratio: float) -> list[int]:
    """Key blocks kept by each query block ``i`` (diagonal and window blocks included)."""
    forced = window_blocks(window, block_size)
    return [min(i + 1, max(forced, math.ceil(keep_ratio * (i + 1) - 1e-9))) for i in range(n_blocks)]


def kept_counts(n_blocks: int, block_size: int, window: int, keep_ratio: float | Tensor,
                device: torch.device | str | None = None) -> Tensor:
    """``kept_blocks`` minus the diagonal, [n_blocks] int32, as tensor ops: ``keep_ratio`` may be a
    0-d tensor (data to a compiled graph, not a constant). float64, as Python computes ``kept_blocks``."""
    ratio = torch.as_tensor(keep_ratio, dtype=torch.float64, device=device)
    rows = torch.arange(1, n_blocks + 1, dtype=torch.float64, device=ratio.device)     # i + 1
    kept = torch.ceil(ratio * rows - 1e-9).clamp_min(window_blocks(window, block_size))
    return (torch.minimum(kept, rows) - 1).to(torch.int32)


def length_position(seq_len: int, short_len: int, long_len: int) -> float:
    """Where ``seq_len`` lies between the two lengths: 0 at or below ``short_len``, 1 at or above
    ``long_len``, linear in log length between: each doubling of the length moves the kept share by
    the same step (lengths, like the crossover of sparse and dense speed, compare as ratios)."""
    span = math.log(long_len) - math.log(short_len)
    return min(1.0, max(0.0, (math.log(seq_len) - math.log(short_len)) / span))


def scheduled_keep_ratio(seq_len: int, keep_short: float, keep_long: float, short_len: int,
                         long_len: int) -> float:
    """``keep_ratio`` at this length under ``keep_schedule: length``: ``keep_short`` at or below
    ``short_len``, ``keep_long`` at or above ``long_len``, linear in log length between."""
    return keep_short + (keep_long - keep_short) * length_position(seq_len, short_len, long_len)


def keep_ratio_tensor(seq_len: int, keep_short: Tensor, keep_long: Tensor, log_short_len: Tensor,
                      log_long_len: Tensor) -> Tensor:
    """``scheduled_keep_ratio`` as tensor ops on 0-d float64 knobs (data to a compiled graph): the
    same float64 arithmetic, so the counts agree with the host's ``kept_blocks``."""
    position = ((math.log(seq_len) - log_short_len) / (log_long_len - log_short_len)).clamp(0.0, 1.0)
    return keep_short + (keep_long - keep_short) * position


def kept_share(seq_len: int, block_size: int, window: int, keep_ratio: float) -> float:
    """Share of the causal key blocks that the pattern visits (1.0 = dense causal)."""
    n = math.ceil(seq_len / block_size)
    return sum(kept_blocks(n, block_size, window, keep_ratio)) / (n * (n + 1) / 2)


@dataclass
class BlockSelection:
    """Which whole key blocks each query block attends besides its diagonal block.

    ``indices[b, h, i, :counts[i]]`` are the kept off-diagonal key blocks of query block ``i``
    (window blocks and selected blocks, all ``< i``); entries past ``counts[i]`` are padding.
    """

    indices: Tensor      # [B, H, n, max(counts)] int32
    counts: Tensor       # [n] int32, same for every batch row and head
    block_size: int
    seq_len: int

    @property
    def n_blocks(self) -> int:
        return self.counts.shape[0]

    def block_mask(self) -> Tensor:
        """Dense boolean block mask ``[B, H, n, n]``: True where a query block visits a key block."""
        B, H, n, m = self.indices.shape
        valid = torch.arange(m, device=self.indices.device) < self.counts.view(n, 1)   # [n, m]
        mask = torch.zeros(B, H, n, n + 1, dtype=torch.bool, device=self.indices.device)
        # padding entries write into the spare column n, then it is dropped
        idx = torch.where(valid, self.indices.long(), n)
        mask.scatter_(-1, idx, True)
        mask = mask[..., :n]
        return mask | torch.eye(n, dtype=torch.bool, device=mask.device)

    def token_mask(self) -> Tensor:
        """Boolean token mask ``[B, H, T, T]``: causal AND inside a visited block."""
        T, bs = self.seq_len, self.block_size
        blocks = self.block_mask().repeat_interleave(bs, dim=-2).repeat_interleave(bs, dim=-1)
        causal = torch.ones(T, T, dtype=torch.bool, device=blocks.device).tril()
        return blocks[..., :T, :T] & causal


def _block_means(x: Tensor, block_size: int) -> Tensor:
    """Mean over each block of ``block_size`` positions; the last block may be short. [B,H,T,D] -> [B,H,n,D]."""
    B, H, T, D = x.shape
    n = math.ceil(T / block_size)
    x = F.pad(x, (0, 0, 0, n * block_size - T))
    sizes = torch.full((n,), float(block_size), device=x.device, dtype=x.dtype)
    sizes[-1] = T - (n - 1) * block_size
    return x.view(B, H, n, block_size, D).sum(-2) / sizes.view(n, 1)


def block_scores(q: Tensor, k: Tensor, block_size: int) -> Tensor:
    """Cheap causal scores ``[B, H, n, n]`` of key block ``j`` for query block ``i``.

    Queries are pooled over the ``block_size`` positions ending at the block's first token (so the
    score of block ``i`` uses only positions <= ``i * block_size``); keys are pooled per block.
    """
    q_lagged = F.pad(q, (0, 0, block_size - 1, 0))[:, :, : q.shape[2]]   # position p holds q[p - bs + 1]
    q_pool = _block_means(q_lagged.float(), block_size)                  # [B, H, n, D]
    k_pool = _block_means(k.float(), block_size)                         # [B, H, n, D]
    return q_pool @ k_pool.transpose(-1, -2)                             # [B, H, n, n]


def select_blocks(q: Tensor, k: Tensor, block_size: int, window: int,
                  keep_ratio: float | Tensor) -> BlockSelection:
    """Choose the kept off-diagonal key blocks of every query block (see the module docstring).

    q, k: [B, H, T, D]. Never selects a block at or after the query block (the diagonal is implicit).
    A float ``keep_ratio`` gives indices as wide as the largest count; a tensor one (whose counts
    are not known on the host) gives the widest, ``n - 1``.
    """
    B, H, T, _ = q.shape
    n = math.ceil(T / block_size)
    counts = kept_counts(n, block_size, window, keep_ratio, q.device)                  # off-diagonal
    if isinstance(keep_ratio, Tensor):
        width = max(n - 1, 1)
    else:
        width = max(max(c - 1 for c in kept_blocks(n, block_size, window, keep_ratio)), 1)
    scores = block_scores(q, k, block_size)                                    # [B, H, n, n]
    i = torch.arange(n, device=q.device).view(n, 1)
    j = torch.arange(n, device=q.device).view(1, n)
    in_window = (j < i) & (j > i - window_blocks(window, block_size))
    scores = scores.masked_fill(in_window, float("inf")).masked_fill(j >= i, float("-inf"))
    indices = scores.topk(min(width, n), dim=-1).indices                      # [B, H, n, width]
    if indices.shape[-1] < width:
        indices = F.pad(indices, (0, width - indices.shape[-1]))
    return BlockSelection(indices.to(torch.int32), counts, block_size, T)


# ----------------------------------------------------------------------------------------------
# Computing attention under a selection
# ----------------------------------------------------------------------------------------------
def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Reference: explicit softmax attention under a boolean mask [.., T, T]. q,k,v: [B,H,T,D]."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])      # [B, H, T, T]
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v                                    # [B, H, T, D]


def sparse_attention_reference(q: Tensor, k: Tensor, v: Tensor, block_size: int, window: int,
                               keep_ratio: float) -> Tensor:
    """The plain path (CPU): select blocks, build the token mask, masked SDPA. q,k,v: [B,H,T,D]."""
    selection = select_blocks(q, k, block_size, window, keep_ratio)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=selection.token_mask())


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def _transposed_lists(dense: Tensor) -> tuple[Tensor, Tensor]:
    """Per key block, the query blocks whose row of ``dense`` ([B, H, n_q, n_kv], bool) holds it:
    counts [B, H, n_kv] and indices [B, H, n_kv, n_q] (int32, ascending, zero padding). A running
    count places each one; torch's ``BlockMask.from_kv_blocks`` sorts instead (an argsort, two
    sort kernels a mask under compile)."""
    t = dense.transpose(-1, -2).to(torch.int32)                             # [B, H, n_kv, n_q]
    n_q = t.shape[-1]
    slot = torch.where(t.bool(), t.cumsum(-1) - 1, n_q)                     # the rest: a spare column
    rows = torch.arange(n_q, dtype=torch.int32, device=t.device).expand_as(t)
    lists = torch.zeros(*t.shape[:-1], n_q + 1, dtype=torch.int32, device=t.device)
    lists.scatter_(-1, slot, rows)
    return t.sum(-1, dtype=torch.int32), lists[..., :n_q].contiguous()


def build_flex_block_mask(selection: BlockSelection):
    """FlexAttention ``BlockMask`` from a selection: diagonal = partial (causal), the rest = full.

    The kernel's index tensors are as wide as the number of key blocks (so the selection's are
    padded). The per-key-block lists the backward pass reads are built here rather than by
    ``BlockMask.from_kv_blocks``: the partial ones are the diagonal again, the full ones come from
    the selection's dense block mask (``_transposed_lists``).
    """
    from torch.nn.attention.flex_attention import BlockMask

    B, H, n, width = selection.indices.shape
    device = selection.indices.device
    diagonal = F.pad(torch.arange(n, device=device, dtype=torch.int32).view(n, 1), (0, n - 1))   # [n, n]
    diagonal = diagonal.expand(B, H, n, n).contiguous()
    one_each = torch.ones(B, H, n, dtype=torch.int32, device=device)       # one partial block a row
    valid = torch.arange(width, device=device) < selection.counts.view(n, 1)            # [n, width]
    spare = torch.where(valid, selection.indices.long(), n)               # padding -> column n
    dense = torch.zeros(B, H, n, n + 1, dtype=torch.bool, device=device).scatter_(-1, spare, True)
    full_q_num_blocks, full_q_indices = _transposed_lists(dense[..., :n])
    return BlockMask(
        seq_lengths=(selection.seq_len, selection.seq_len),
        kv_num_blocks=one_each, kv_indices=diagonal,
        full_kv_num_blocks=selection.counts.view(1, 1, n).expand(B, H, n).contiguous(),
        full_kv_indices=F.pad(selection.indices, (0, n - width)),
        q_num_blocks=one_each, q_indices=diagonal,
        full_q_num_blocks=full_q_num_blocks, full_q_indices=full_q_indices,
        BLOCK_SIZE=(selection.block_size, selection.block_size),
        mask_mod=_causal,
    )


# The backward kernel's tiles for long sequences: 32-query x 128-key tiles for dK/dV, 128 x 32 for dQ,
# 3 stages, 4 warps (torch's H100 default for head size 64: 64 x 128 / 128 x 64, 8 warps). Measured on
# an H100 (bench/attention_options.py, bench/RESULTS.md): the whole layer 1.10x faster at 16k and 32k
# tokens, 0.96x at 2k and 4k (hence from 16k on), results identical. Shared memory stays small enough
# for Ampere too (torch's own default there for head sizes below 64).
LONG_SEQ_LEN = 16384
LONG_BWD_TILES = {"bwd_BLOCK_M1": 32, "bwd_BLOCK_N1": 128, "bwd_BLOCK_M2": 128, "bwd_BLOCK_N2": 32,
                  "bwd_num_stages": 3, "bwd_num_warps": 4}


# FlexAttention's kernel backend: None = torch's choice (its Triton kernels, tuned above); "FLASH" =
# flash-attn-4's CuTe DSL kernels (torch >= 2.10 with flash_attn.cute installed; Hopper / Blackwell),
# opt-in while it is being measured (bench/device_flash.sh, bench/RESULTS.md). Read when a graph is
# traced: set it before the model compiles.
FLEX_BACKEND: str | None = None


def flex_kernel_options(q: Tensor, block_size: int) -> dict:
    """FlexAttention's kernel options for q ([B, H, T, D]) under ``block_size``-token mask blocks."""
    if FLEX_BACKEND is not None:                       # the Triton kernels' options do not apply
        return {"BACKEND": FLEX_BACKEND}
    options = {"ROWS_GUARANTEED_SAFE": True}          # every query sees at least itself
    if block_size < 128:                               # kernel tiles must divide the mask's blocks
        options.update(BLOCK_M=block_size, BLOCK_N=block_size)
    elif (q.is_cuda and block_size % 128 == 0 and q.shape[2] >= LONG_SEQ_LEN and q.shape[-1] <= 64
          and q.dtype in (torch.bfloat16, torch.float16)):
        options.update(LONG_BWD_TILES)
    return options


# FlexAttention runs on sequences padded to a whole number of PAD_BLOCKS mask blocks (``padded``;
# 0 = none, 1 = to whole blocks). 4: on an H100 and an H200 (torch 2.11) the layer faulted (an illegal
# address in FlexAttention's forward kernel) at 1,408 tokens (11 blocks) with 12 heads, and the text
# task, whose lengths vary, aborted at its first steps; padded to 12 blocks the same shape passes, the
# text task trains (eager and compiled), and no length of a multiple of 4 blocks has faulted in any
# run (bench/RESULTS.md, "The text task's GPU fault"). Fixed-shape tasks at such lengths (2,048, 4,096
# tokens ...) are not padded.
PAD_BLOCKS = 4


def padded(selection: BlockSelection, q: Tensor, k: Tensor, v: Tensor, multiple: int):
    """The selection and q, k, v on a sequence padded at the end to a whole number of ``multiple``
    blocks: the padding's query blocks keep their diagonal only; its keys come after every real query,
    so causality hides them. Exact: the real queries' rows see what they saw, and the padding's rows
    (sliced off by the caller) get no gradient, so they add none to k and v."""
    n, bs, T = selection.n_blocks, selection.block_size, selection.seq_len
    n_pad = -(-n // multiple) * multiple
    if n_pad * bs == T:
        return selection, q, k, v
    extra = n_pad - n
    indices = F.pad(selection.indices, (0, 0, 0, extra))                 # new rows: padding, count 0
    counts = F.pad(selection.counts, (0, extra))
    q, k, v = (F.pad(x, (0, 0, 0, n_pad * bs - T)) for x in (q, k, v))
    return BlockSelection(indices, counts, bs, n_pad * bs), q, k, v


def _flex_sparse(q: Tensor, k: Tensor, v: Tensor, block_size: int, window: int, keep_ratio: float | Tensor,
                 kernel_options: dict | None = None) -> Tensor:
    """Selection, block mask and FlexAttention in one graph (compiled on its own when eager: ``_compiled``),
    on the sequence padded to whole groups of ``PAD_BLOCKS`` blocks."""
    from torch.nn.attention.flex_attention import flex_attention

    T = q.shape[2]
    selection = select_blocks(q, k, block_size, window, keep_ratio)
    if PAD_BLOCKS:
        selection, q, k, v = padded(selection, q, k, v, PAD_BLOCKS)
    options = flex_kernel_options(q, block_size)
    options.update(kernel_options or {})
    out = flex_attention(q, k, v, block_mask=build_flex_block_mask(selection), kernel_options=options)
    return out[:, :, :T]                                                   # the padding's rows off


# The compiled functions an eager model calls, made at the first sparse call on CUDA (``_compiled``:
# ``torch.compile`` loads Inductor's compiler, seconds that a CPU run or a dense trial never needs;
# never called while Dynamo traces, see ``sparse_attention``). Their graphs are keyed on shapes, window, block size
# and grad mode (keep_ratio is data when it comes as a tensor), so trials of one worker that share
# those reuse them; the trainer resets Dynamo before a trial could reach the recompile limit
# (autotune/train.py).
_compiled_fns: dict[str, object] = {}


def _compiled(name: str):
    """``torch.compile`` of ``_flex_sparse`` (static shapes) or ``_flex_sparse_varlen`` (dynamic)."""
    fn = _compiled_fns.get(name)
    if fn is None:
        fn = _compiled_fns[name] = (torch.compile(_flex_sparse, dynamic=False) if name == "static" else
                                    torch.compile(_flex_sparse_varlen, dynamic=None))
    return fn


def _flex_sparse_varlen(q: Tensor, k: Tensor, v: Tensor, block_size: int, window: int,
                        keep_ratio: float | Tensor) -> Tensor:
    """``_flex_sparse`` for batches whose size and length keep changing (text): its own code
    object, so its graphs (batch and length dynamic) count apart from the static ones."""
    return _flex_sparse(q, k, v, block_size, window, keep_ratio)


STATIC_SHAPES = 4     # (batch, length) shapes of one head layout compiled statically before going dynamic
_shapes_seen: dict[tuple, set[tuple[int, int]]] = {}


def _eager_flex(q: Tensor, k: Tensor, v: Tensor, block_size: int, window: int):
    """The compiled FlexAttention an eager model calls: static graphs for the few shapes of a
    fixed-shape task (training, evaluation, batch-1 latency), a graph with batch and length dynamic
    once a head layout has seen more shapes (variable-length text), so that a run never reaches
    Dynamo's recompile limit."""
    B, H, T, D = q.shape
    seen = _shapes_seen.setdefault((H, D, block_size, window, q.dtype, torch.is_grad_enabled()), set())
    if (B, T) in seen or len(seen) < STATIC_SHAPES:
        seen.add((B, T))
        return _compiled("static")
    for x in (q, k, v):
        torch._dynamo.maybe_mark_dynamic(x, 0)
        torch._dynamo.maybe_mark_dynamic(x, 2)
    return _compiled("varlen")


def forget_shapes() -> None:
    """Start counting shapes afresh (a new trial: a fixed-shape task goes back to static graphs)."""
    _shapes_seen.clear()


def compiled_graph_count() -> int:
    """Graphs Dynamo holds for the eager path's compiled FlexAttention (static: one per shape,
    window, block size and grad mode; dynamic ones apart), the larger of the two, since the
    recompile limit counts per function; a large number when the installed torch cannot tell,
    so that a caller guarding the limit resets."""
    try:
        entries = torch._C._dynamo.eval_frame._debug_get_cache_entry_list
        return max(len(entries(_flex_sparse.__code__)), len(entries(_flex_sparse_varlen.__code__)))
    except (AttributeError, RuntimeError, TypeError):
        return 1 << 30


def flex_available(x: Tensor) -> bool:
    """FlexAttention's fused kernels need CUDA (they compile through Triton)."""
    return x.is_cuda


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, *, block_size: int, window: int,
                     keep_ratio: float | Tensor, impl: str = "auto") -> Tensor:
    """Causal attention under the window + selected-blocks pattern. q,k,v: [B,H,T,D] -> [B,H,T,D].

    impl: ``auto`` (flex on CUDA, reference elsewhere), ``flex`` or ``reference``. Dense causal
    attention is used, on every device, when a float ``keep_ratio`` keeps every causal block (with
    a tensor ratio the caller decides that, as ``CausalSelfAttention`` does).
    Inside a graph being compiled (the model compiled as a whole or by blocks) FlexAttention is
    traced into that graph; in an eager model it runs through its own compiled graph.
    """
    T = q.shape[2]
    if not isinstance(keep_ratio, Tensor) and kept_share(T, block_size, window, keep_ratio) >= 1.0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if impl == "flex" or (impl == "auto" and flex_available(q)):
        # Dynamo's own flag (True only while it traces this code): torch.compiler.is_compiling() is
        # also True in eager code while another thread compiles (torch 2.13 holds a global flag
        # for the whole compile), which would run FlexAttention unfused here
        if torch.compiler.is_dynamo_compiling():
            return _flex_sparse(q, k, v, block_size, window, keep_ratio)
        return _eager_flex(q, k, v, block_size, window)(q, k, v, block_size, window, keep_ratio)
    return sparse_attention_reference(q, k, v, block_size, window, keep_ratio)

