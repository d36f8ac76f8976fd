"""Probe: the sparse attention layer (FlexAttention, as an eager model calls it) at given shapes,
forward and backward on a GPU, against the plain reference. One shape a process, so that a GPU
fault ends only its own run (a shell loop runs several and reads each exit code).

    python bench/flex_shapes_probe.py 45 12 1424 32          # B H T D (bf16, block 128, window 128, keep 0.3)
    python bench/flex_shapes_probe.py 45 12 1424 32 model    # q, k, v laid out as the model makes them
                                                             # (views of one [B, T, 3, H, D] projection)
    python bench/flex_shapes_probe.py 45 12 1408 32 model MASK   # MASK: ours (default: the layer as the
        # model calls it), eager_mask (our BlockMask built eagerly, only flex_attention compiled), torch_mask
        # (torch's create_block_mask of the same pattern), causal (torch's causal mask: no selection at all)
    python bench/flex_shapes_probe.py 45 12 1408 32 model ours 4   # attention.PAD_BLOCKS = 4
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autotune.model import attention  # noqa: E402
from autotune.model.attention import (build_flex_block_mask, flex_kernel_options, select_blocks,  # noqa: E402
                                      sparse_attention, sparse_attention_reference)


def other_mask(q, k, v, block, window, ratio, how):
    """The same attention through another block mask (to tell our mask's fault from FlexAttention's)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    B, H, T, _ = q.shape
    options = flex_kernel_options(q, block)
    if how == "causal":
        mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, B, H, T, T, device="cuda", BLOCK_SIZE=block)
    else:
        selection = select_blocks(q.detach(), k.detach(), block, window, ratio)
        if how == "eager_mask":
            mask = build_flex_block_mask(selection)
        else:
            dense = selection.block_mask()                       # [B, H, n, n] bool

            def mask_mod(b, h, qi, ki):
                return (qi >= ki) & dense[b, h, qi // block, ki // block]
            mask = create_block_mask(mask_mod, B, H, T, T, device="cuda", BLOCK_SIZE=block)
    return torch.compile(flex_attention, dynamic=False)(q, k, v, block_mask=mask, kernel_options=options)


def main(argv: list[str]) -> int:
    B, H, T, D = map(int, argv[:4])
    layout = argv[4] if len(argv) > 4 else "contiguous"
    block, window, keep = 128, 128, 0.3
    torch.manual_seed(0)
    if layout == "model":          # CausalSelfAttention: qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        qkv = torch.randn(B, T, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        leaves = [qkv]
    else:
        q, k, v = leaves = [torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                            for _ in range(3)]
    how = argv[5] if len(argv) > 5 else "ours"
    if len(argv) > 6:
        attention.PAD_BLOCKS = int(argv[6])
    ratio = torch.tensor(keep, dtype=torch.float64, device="cuda")
    if how == "ours":
        out = sparse_attention(q, k, v, block_size=block, window=window, keep_ratio=ratio, impl="flex")
    else:
        out = other_mask(q, k, v, block, window, ratio, how)
    out.float().square().mean().backward()
    torch.cuda.synchronize()
    if how == "causal":
        ref = torch.nn.functional.scaled_dot_product_attention(q.detach().float(), k.detach().float(),
                                                               v.detach().float(), is_causal=True)
    else:
        ref = sparse_attention_reference(q.detach().float(), k.detach().float(), v.detach().float(), block,
                                         window, keep)
    err = (out.float() - ref).abs().max().item()
    print(f"B={B} H={H} T={T} D={D} {layout} {how} pad {attention.PAD_BLOCKS}: ok, max |flex - reference| {err:.3g}, grad finite "
          f"{all(bool(torch.isfinite(x.grad).all()) for x in leaves)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
