"""Dynamic sparse attention: the pattern, its causality, and every path against an explicit mask."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autotune.model.attention import (
    kept_blocks, kept_share, masked_attention, select_blocks, sparse_attention, window_blocks)

# (B, H, T, D, block_size, window, keep_ratio); T not a multiple of block_size on purpose in some
SHAPES = [
    (2, 2, 128, 16, 16, 16, 0.3),
    (1, 3, 200, 8, 32, 40, 0.5),
    (2, 1, 256, 32, 16, 48, 0.2),
    (1, 2, 97, 16, 8, 1, 0.6),
]


def qkv(B, H, T, D, dtype=torch.float32, device="cpu"):
    return [torch.randn(B, H, T, D, dtype=dtype, device=device) for _ in range(3)]


def explicit_mask(selection, T) -> torch.Tensor:
    """The token mask written out element by element from the selection's block sets."""
    bs = selection.block_size
    B, H = selection.indices.shape[:2]
    mask = torch.zeros(B, H, T, T, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for i in range(selection.n_blocks):
                kept = set(selection.indices[b, h, i, : selection.counts[i]].tolist()) | {i}
                for t in range(i * bs, min((i + 1) * bs, T)):
                    for j in kept:
                        mask[b, h, t, j * bs: min((j + 1) * bs, t + 1)] = True
    return mask


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("shape", SHAPES)
def test_sparse_attention_equals_dense_attention_under_the_same_explicit_mask(shape):
    B, H, T, D, bs, window, keep = shape
    q, k, v = qkv(B, H, T, D)
    out = sparse_attention(q, k, v, block_size=bs, window=window, keep_ratio=keep, impl="reference")
    mask = explicit_mask(select_blocks(q, k, bs, window, keep), T)
    ref = masked_attention(q.double(), k.double(), v.double(), mask)
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_each_query_block_keeps_its_share_window_and_only_earlier_blocks(shape):
    B, H, T, D, bs, window, keep = shape
    q, k, _ = qkv(B, H, T, D)
    sel = select_blocks(q, k, bs, window, keep)
    n = math.ceil(T / bs)
    counts = kept_blocks(n, bs, window, keep)
    forced = window_blocks(window, bs)
    for i in range(n):
        chosen = sel.indices[..., i, : sel.counts[i]]
        assert sel.counts[i] + 1 == counts[i]
        assert (chosen < i).all() and (chosen >= 0).all()
        for row in chosen.flatten(0, 1):
            assert len(set(row.tolist())) == len(row)                          # distinct
            assert set(range(max(0, i - forced + 1), i)) <= set(row.tolist())  # window blocks kept


def test_selection_picks_the_top_scoring_blocks_of_the_lagged_pooled_scorer():
    B, H, T, D, bs, window, keep = 1, 2, 160, 8, 16, 16, 0.4
    q, k, _ = qkv(B, H, T, D)
    sel = select_blocks(q, k, bs, window, keep)
    n, forced = T // bs, window_blocks(window, bs)
    for h in range(H):
        for i in range(n):
            q_pool = q[0, h, max(0, i * bs - bs + 1): i * bs + 1].sum(0) / bs
            scores = {j: float(q_pool @ k[0, h, j * bs:(j + 1) * bs].mean(0)) for j in range(i - forced + 1)}
            n_free = int(sel.counts[i]) - min(forced - 1, i)
            best = sorted(scores, key=scores.get, reverse=True)[:n_free]
            window_set = set(range(max(0, i - forced + 1), i))
            assert set(sel.indices[0, h, i, : sel.counts[i]].tolist()) == window_set | set(best)


def test_window_only_attends_the_window_blocks():
    B, H, T, D, bs, window = 2, 2, 192, 16, 16, 40
    q, k, v = qkv(B, H, T, D)
    out = sparse_attention(q, k, v, block_size=bs, window=window, keep_ratio=0.0, impl="reference")
    t = torch.arange(T)
    blocks_back = t.view(T, 1) // bs - t.view(1, T) // bs
    mask = (t.view(T, 1) >= t.view(1, T)) & (blocks_back < window_blocks(window, bs))
    assert mask[(t.view(T, 1) - t.view(1, T) >= 0) & (t.view(T, 1) - t.view(1, T) < window)].all()
    assert rel_err(out, masked_attention(q.double(), k.double(), v.double(), mask)) < 1e-5


@pytest.mark.parametrize("T", [64, 100, 256])
def test_keep_all_is_dense_causal_attention(T):
    q, k, v = qkv(2, 2, T, 16)
    dense = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    assert kept_share(T, 16, 16, 1.0) == 1.0
    assert select_blocks(q, k, 16, 16, 1.0).token_mask().equal(
        torch.ones(T, T, dtype=torch.bool).tril().expand(2, 2, T, T))
    out = sparse_attention(q, k, v, block_size=16, window=16, keep_ratio=1.0, impl="reference")
    assert rel_err(out, dense) < 1e-5



@pytest.mark.parametrize("shape", SHAPES)
def test_selection_and_outputs_of_earlier_positions_ignore_future_tokens(shape):
    B, H, T, D, bs, window, keep = shape
    q, k, v = qkv(B, H, T, D)
    p = T // 2 + 3                                            # first perturbed position
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, p:] = torch.randn_like(x[:, :, p:]) * 5
    sel, sel2 = select_blocks(q, k, bs, window, keep), select_blocks(q2, k2, bs, window, keep)
    settled = [i for i in range(sel.n_blocks) if i * bs < p]     # blocks whose first query is before p
    for i in settled:
        a = sel.indices[..., i, : sel.counts[i]].sort(-1).values
        b = sel2.indices[..., i, : sel2.counts[i]].sort(-1).values
        assert a.equal(b)
    out = sparse_attention(q, k, v, block_size=bs, window=window, keep_ratio=keep, impl="reference")
    out2 = sparse_attention(q2, k2, v2, block_size=bs, window=window, keep_ratio=keep, impl="reference")
    torch.testing.assert_close(out[:, :, :p], out2[:, :, :p], rtol=0, atol=1e-6)


def test_kept_share_falls_with_length_towards_keep_ratio():
    shares = [kept_share(T, 128, 128, 0.2) for T in (1024, 4096, 16384)]
    assert shares[0] > shares[1] > shares[2] > 0.2
    assert shares[2] < 0.25


# ---------------------------------------------------------------------------------------------- GPU
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def full_fp32():
    """The reference's fp32 matmuls in full precision (a trainer in this process may have chosen TF32)."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(saved)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("T,bs,window,keep", [(1024, 128, 128, 0.2), (2048, 64, 128, 0.3), (1000, 128, 128, 0.5)])
def test_flex_path_matches_the_reference_forward_and_backward(T, bs, window, keep, full_fp32):
    B, H, D = 2, 4, 64
    q, k, v = (x.requires_grad_() for x in qkv(B, H, T, D, device="cuda"))
    out = sparse_attention(q, k, v, block_size=bs, window=window, keep_ratio=keep, impl="flex")
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    ref = sparse_attention(q, k, v, block_size=bs, window=window, keep_ratio=keep, impl="reference")
    rq, rk, rv = torch.autograd.grad(ref, (q, k, v), grad)
    # fp32 through FlexAttention's Triton kernel may use tf32 dots: about 3e-4
    for a, b in ((out, ref), (dq, rq), (dk, rk), (dv, rv)):
        assert rel_err(a, b) < 2e-3


@pytest.mark.gpu
@cuda
def test_flex_path_in_bf16_stays_close_to_the_fp32_reference():
    B, H, T, D = 1, 16, 4096, 64
    q, k, v = qkv(B, H, T, D, device="cuda")
    out = sparse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), block_size=128, window=128,
                           keep_ratio=0.2, impl="flex")
    ref = masked_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(),
                           select_blocks(q.bfloat16(), k.bfloat16(), 128, 128, 0.2).token_mask())
    assert rel_err(out, ref) < 1e-2


@pytest.mark.parametrize("T,bs", [(256, 32), (200, 64)])
def test_flex_block_mask_visits_the_selected_blocks_with_only_the_diagonal_partial(T, bs):
    from autotune.model.attention import build_flex_block_mask
    q, k, _ = qkv(2, 3, T, 16)
    sel = select_blocks(q, k, bs, bs, 0.4)
    mask = build_flex_block_mask(sel)
    n = sel.n_blocks
    full = torch.zeros(2, 3, n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(int(mask.full_kv_num_blocks[0, 0, i])):
            full[:, :, i].scatter_(-1, mask.full_kv_indices[:, :, i, j: j + 1].long(), True)
    assert full.equal(sel.block_mask() & ~torch.eye(n, dtype=torch.bool))
    assert (mask.kv_num_blocks == 1).all()
    assert mask.kv_indices[..., 0].equal(torch.arange(n, dtype=torch.int32).expand(2, 3, n))
    # the transposed (per key block) lists that the backward pass uses agree with the forward ones
    assert int(mask.full_q_num_blocks.sum()) == int(mask.full_kv_num_blocks.sum())


@pytest.mark.parametrize("T,bs,window,keep", [(1024, 128, 128, 0.2), (2048, 128, 256, 0.45), (200, 64, 64, 0.7)])
def test_the_masks_per_key_block_lists_are_torchs_transposition(T, bs, window, keep):
    # the backward pass reads, per key block, the query blocks that visit it: built here with a
    # running count instead of from_kv_blocks' sort; same counts and same blocks (ascending)
    from torch.nn.attention.flex_attention import BlockMask

    from autotune.model.attention import build_flex_block_mask
    q, k, _ = qkv(2, 3, T, 16)
    for ratio in (keep, torch.tensor(keep, dtype=torch.float64)):
        sel = select_blocks(q, k, bs, window, ratio)
        mask = build_flex_block_mask(sel)
        torchs = BlockMask.from_kv_blocks(mask.kv_num_blocks, mask.kv_indices, mask.full_kv_num_blocks,
                                          mask.full_kv_indices, BLOCK_SIZE=bs, seq_lengths=(T, T))
        for ours, theirs, counts in ((mask.q_indices, torchs.q_indices, torchs.q_num_blocks),
                                     (mask.full_q_indices, torchs.full_q_indices, torchs.full_q_num_blocks)):
            width = torch.arange(ours.shape[-1]) < counts.unsqueeze(-1)
            assert ours.shape == theirs.shape and ours.dtype == torch.int32
            assert torch.where(width, ours, -1).equal(torch.where(width, theirs, -1))
        assert mask.q_num_blocks.equal(torchs.q_num_blocks)
        assert mask.full_q_num_blocks.equal(torchs.full_q_num_blocks)
        assert int(mask.full_q_num_blocks.sum()) > 0


# ------------------------------------------------------------------------------- length schedule
def test_length_schedule_keeps_its_ends_and_is_linear_in_log_length_between():
    from autotune.model.attention import scheduled_keep_ratio
    ratio = lambda T: scheduled_keep_ratio(T, 0.8, 0.2, 256, 1024)
    assert ratio(1) == ratio(64) == ratio(256) == 0.8
    assert ratio(1024) == ratio(4096) == pytest.approx(0.2)
    assert ratio(512) == pytest.approx(0.5)                      # the geometric middle: halfway
    lengths = [257, 300, 400, 600, 800, 1000, 1023]
    assert all(a > b for a, b in zip(map(ratio, lengths), map(ratio, lengths[1:])))


@pytest.mark.parametrize("schedule", [dict(keep_short=0.8, keep_long=0.2, short_len=256, long_len=1024),
                                      dict(keep_short=0.3, keep_long=0.6, short_len=100, long_len=3000)])
def test_the_schedule_as_tensor_data_gives_the_hosts_ratio_and_block_counts(schedule):
    from autotune.model.attention import keep_ratio_tensor, kept_counts, scheduled_keep_ratio
    knobs = [torch.tensor(v, dtype=torch.float64) for v in
             (schedule["keep_short"], schedule["keep_long"], math.log(schedule["short_len"]),
              math.log(schedule["long_len"]))]
    for T in (64, 100, 256, 257, 384, 512, 1000, 1024, 2048, 5000):
        host = scheduled_keep_ratio(T, **schedule)
        data = keep_ratio_tensor(T, *knobs)
        assert data.dtype == torch.float64 and data.dim() == 0 and data.item() == host
        n = math.ceil(T / 16)
        assert kept_counts(n, 16, 32, data).add(1).tolist() == kept_blocks(n, 16, 32, host)


def test_the_model_loads_inductors_compiler_only_when_something_compiles():
    # the eager FlexAttention path is compiled at its first call on CUDA, not when the model is
    # imported: torch.compile loads Inductor's compiler (~180 modules, seconds of every worker's
    # start), which a CPU run or a dense trial never uses
    import subprocess
    import sys
    script = ("import sys, torch\n"
              "from autotune.model import ModelConfig, Transformer\n"
              "m = Transformer(ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, d_ff=64,\n"
              "    num_experts=2, top_k=1, attention='sparse', keep_ratio=0.5, window=16, block_size=16,\n"
              "    max_seq_len=64))\n"
              "logits, aux = m(torch.randint(32, (2, 64)))\n"
              "logits.sum().backward()\n"
              "print('torch._inductor.compile_fx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]


def test_long_half_precision_sequences_get_the_measured_backward_tiles_and_nothing_else_does():
    from types import SimpleNamespace

    from autotune.model.attention import LONG_BWD_TILES, flex_kernel_options

    def q(T, D=64, dtype=torch.bfloat16, is_cuda=True):
        return SimpleNamespace(shape=(2, 4, T, D), dtype=dtype, is_cuda=is_cuda)
    tiled = flex_kernel_options(q(16384), 128)
    assert tiled == {"ROWS_GUARANTEED_SAFE": True, **LONG_BWD_TILES}
    assert flex_kernel_options(q(32768, dtype=torch.float16), 256) == tiled
    for short_or_other in (q(8192), q(16384, D=128), q(16384, dtype=torch.float32), q(16384, is_cuda=False)):
        assert flex_kernel_options(short_or_other, 128) == {"ROWS_GUARANTEED_SAFE": True}
    assert flex_kernel_options(q(16384), 64) == {"ROWS_GUARANTEED_SAFE": True, "BLOCK_M": 64, "BLOCK_N": 64}


def test_an_explicit_flex_backend_replaces_the_triton_kernel_options(monkeypatch):
    from types import SimpleNamespace

    from autotune.model import attention

    q = SimpleNamespace(shape=(2, 4, 16384, 64), dtype=torch.bfloat16, is_cuda=True)
    monkeypatch.setattr(attention, "FLEX_BACKEND", "FLASH")
    assert attention.flex_kernel_options(q, 128) == {"BACKEND": "FLASH"}
    assert attention.flex_kernel_options(q, 64) == {"BACKEND": "FLASH"}


def _flash_installed() -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(not _flash_installed(), reason="needs flash_attn.cute (bench/device_flash.sh)")
@pytest.mark.parametrize("T,H,D", [(2048, 4, 64), (1408, 12, 32)])
def test_flash_backend_matches_the_reference_forward_and_backward(T, H, D, monkeypatch, full_fp32):
    """FlexAttention's FLASH backend (flash-attn-4's kernels; its block-sparse backward on H100 gave wrong
    gradients in early releases) on the model's pattern, bf16, against the fp32 reference."""
    from autotune.model import attention

    monkeypatch.setattr(attention, "FLEX_BACKEND", "FLASH")
    torch._dynamo.reset()
    B = 2
    q, k, v = (x.bfloat16().requires_grad_() for x in qkv(B, H, T, D, device="cuda"))
    out = sparse_attention(q, k, v, block_size=128, window=128, keep_ratio=0.3, impl="flex")   # as the model calls it
    grad = torch.randn_like(out)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = masked_attention(q32, k32, v32, select_blocks(q, k, 128, 128, 0.3).token_mask())
    want = (ref, *torch.autograd.grad(ref, (q32, k32, v32), grad.float()))
    torch._dynamo.reset()
    for a, b in zip(got, want):
        assert rel_err(a, b) < 2e-2


@pytest.mark.gpu
@cuda
def test_flex_path_at_16k_tokens_with_its_own_backward_tiles_matches_the_reference(full_fp32):
    B, H, T, D = 1, 2, 16384, 64
    q, k, v = (x.bfloat16().requires_grad_() for x in qkv(B, H, T, D, device="cuda"))
    out = sparse_attention(q, k, v, block_size=128, window=128, keep_ratio=0.2, impl="flex")
    grad = torch.randn_like(out)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    mask = select_blocks(q, k, 128, 128, 0.2).token_mask()
    ref = masked_attention(q32, k32, v32, mask)
    want = (ref, *torch.autograd.grad(ref, (q32, k32, v32), grad.float()))
    for a, b in zip(got, want):      # bf16 inputs and outputs against the fp32 reference on the same values
        assert rel_err(a, b) < 2e-2


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("T", [1280, 1400, 1408, 1424, 1664, 1792])
def test_flex_path_as_the_model_calls_it_at_text_lengths_matches_the_reference(T, full_fp32):
    """Variable-length text meets every block count: bf16, head size 32, the ratio as a tensor, q, k, v
    as views of one projection (as ``CausalSelfAttention`` makes them). 1,408 tokens (11 blocks, 12
    heads) faulted on an H100 before sequences were padded (``PAD_BLOCKS``; bench/RESULTS.md, "The text
    task's GPU fault")."""
    B, H, D = 4, 12, 32
    qkv_ = torch.randn(B, T, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = qkv_.permute(2, 0, 3, 1, 4)
    ratio = torch.tensor(0.3, dtype=torch.float64, device="cuda")
    out = sparse_attention(q, k, v, block_size=128, window=128, keep_ratio=ratio, impl="flex")
    grad = torch.randn_like(out)
    (got_grad,) = torch.autograd.grad(out, qkv_, grad)
    ref_in = qkv_.detach().float().requires_grad_()
    q32, k32, v32 = ref_in.permute(2, 0, 3, 1, 4)
    ref = masked_attention(q32, k32, v32, select_blocks(q, k, 128, 128, 0.3).token_mask())
    (want_grad,) = torch.autograd.grad(ref, ref_in, grad.float())
    assert rel_err(out, ref) < 2e-2 and rel_err(got_grad, want_grad) < 2e-2


@pytest.mark.parametrize("T,bs,multiple", [(200, 64, 1), (200, 64, 4), (448, 64, 4), (320, 32, 2), (512, 64, 4)])
def test_padding_the_sequence_to_whole_blocks_changes_no_real_row_or_gradient(T, bs, multiple):
    """``padded``: the selection and q, k, v on a sequence padded to whole ``multiple``-block groups give
    the real rows the same outputs and q, k, v the same gradients (causality hides the padded keys;
    the padded rows, sliced off, send back none)."""
    from autotune.model.attention import padded
    torch.manual_seed(T + multiple)
    q, k, v = (x.requires_grad_() for x in qkv(2, 3, T, 16))
    grad = torch.randn(2, 3, T, 16)
    sel = select_blocks(q, k, bs, bs, torch.tensor(0.4, dtype=torch.float64))
    ref = masked_attention(q, k, v, sel.token_mask())
    sel_p, qp, kp, vp = padded(sel, q, k, v, multiple)
    assert sel_p.seq_len % (bs * multiple) == 0 and sel_p.seq_len - T < bs * multiple
    assert sel_p.n_blocks == sel_p.seq_len // bs and qp.shape[2] == sel_p.seq_len
    out = masked_attention(qp, kp, vp, sel_p.token_mask())[:, :, :T]
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_padded_flex_attention_compiled_for_changing_lengths_matches_the_reference(monkeypatch):
    """The padded path through FlexAttention itself (Inductor's CPU kernel, forward), batch and length
    dynamic as variable-length text runs it: lengths padded by 1 to 3 blocks and one that needs none,
    each against the reference."""
    from autotune.model import attention
    monkeypatch.setattr(attention, "PAD_BLOCKS", 4)
    multiples, padded = [], attention.padded
    monkeypatch.setattr(attention, "padded", lambda *args: multiples.append(args[-1]) or padded(*args))
    torch._dynamo.reset()
    compiled = torch.compile(attention._flex_sparse_varlen, dynamic=True)
    ratio = torch.tensor(0.4, dtype=torch.float64)
    for B, T in [(2, 200), (3, 448), (2, 520), (1, 512)]:
        q, k, v = qkv(B, 3, T, 16)
        with torch.no_grad():
            out = compiled(q, k, v, 64, 64, ratio)
        torch.testing.assert_close(out, attention.sparse_attention_reference(q, k, v, 64, 64, 0.4))
    assert multiples and set(multiples) == {4}
