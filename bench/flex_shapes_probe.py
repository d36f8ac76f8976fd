"""Probe: the sparse attention layer (FlexAttention, as an eager model calls it) at given shapes,
forward and backward on a GPU, against the plain reference. One shape a process, so that a GPU
fault ends only its own run (a shell loop runs several and reads each exit code).

    python bench/flex_shapes_probe.py 45 12 1424 32          # B H T D (bf16, block 128, window 128, keep 0.3)
    python bench/flex_shapes_probe.py 45 12 1424 32 model    # q, k, v laid out as the model makes them
                                                             # (views of one [B, T, 3, H, D] projection)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autotune.model.attention import sparse_attention, sparse_attention_reference   # noqa: E402


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
    out = sparse_attention(q, k, v, block_size=block, window=window,
                           keep_ratio=torch.tensor(keep, dtype=torch.float64, device="cuda"), impl="flex")
    out.float().square().mean().backward()
    torch.cuda.synchronize()
    ref = sparse_attention_reference(q.detach().float(), k.detach().float(), v.detach().float(), block, window, keep)
    err = (out.float() - ref).abs().max().item()
    print(f"B={B} H={H} T={T} D={D} {layout}: ok, max |flex - reference| {err:.3g}, grad finite "
          f"{all(bool(torch.isfinite(x.grad).all()) for x in leaves)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
