"""Where a sparse attention layer's time goes at a length (issue 20: 0.83x dense at 1k tokens).

For each length: the wall time of one forward + backward (``do_bench`` median, CUDA events), the GPU
time its kernels take (torch.profiler, summed per step), the number of kernels a step launches, and
the kernels that take the most; for the sparse layer (block selection, BlockMask building and
FlexAttention in one compiled graph, as ``bench/model_speed.py --only attention`` times it) and for
dense flash SDPA; then the same per layer with ``--stack`` layers chained in one compiled graph (as
in a model compiled whole or by blocks). Wall well above kernel time means the step waits on the
host (launches, the compiled graph's wrapper), not on the GPU.

    python3 bench/attention_profile.py --lengths 1024 16384 --out /tmp/attention_profile.json

CUDA only. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's autotune
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # model_speed, a sibling

import torch
import torch.nn.functional as F

from autotune.model import attention as attn
from model_speed import attention_shapes, bench_ms, profile_kernels


def step_of(fn, q, k, v, grad):
    def run():
        q.grad = k.grad = v.grad = None
        fn().backward(grad)
    return run


def chain(layer, layers: int):
    """``layers`` attention layers in one graph, each one's output the next one's queries: the
    compiled graph's own host work (guards, the autograd wrapper) is paid once for all of them, as
    in a model compiled whole or by blocks, where one layer's launches hide behind the GPU's work."""
    def run(q, k, v):
        for _ in range(layers):
            q = layer(q, k, v)
        return q
    return run


def profile_length(T: int, B: int, H: int = 16, D: int = 64, bs: int = 128, window: int = 128,
                   keep: float = 0.2, top: int = 8, stack: int = 8) -> list[dict]:
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)
    dense_layer = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)   # noqa: E731
    sparse_layer = lambda q, k, v: attn._flex_sparse(q, k, v, bs, window, keep)             # noqa: E731
    sparse = torch.compile(sparse_layer, dynamic=False)
    variants = [("dense SDPA", 1, lambda: dense_layer(q, k, v)), ("sparse", 1, lambda: sparse(q, k, v))]
    if stack > 1:
        dense_stack = torch.compile(chain(dense_layer, stack), dynamic=False)
        sparse_stack = torch.compile(chain(sparse_layer, stack), dynamic=False)
        variants += [(f"dense SDPA, {stack} in a graph", stack, lambda: dense_stack(q, k, v)),
                     (f"sparse, {stack} in a graph", stack, lambda: sparse_stack(q, k, v))]
    rows = []
    for name, layers, fn in variants:
        run = step_of(fn, q, k, v, grad)
        wall = bench_ms(run) / layers
        kernels = profile_kernels(run)
        rows.append({"tokens": T, "batch": B, "layer": name, "wall_ms": wall,
                     "kernel_ms": sum(ms for _, ms, _ in kernels) / layers,
                     "kernels": sum(n for _, _, n in kernels) / layers,
                     "top_kernels": [(key[:90], round(ms / layers, 4), n / layers) for key, ms, n in kernels[:top]]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--tokens", type=int, default=32768, help="tokens a batch (batch = tokens // length)")
    parser.add_argument("--stack", type=int, default=8, help="also time this many layers in one graph (1: not)")
    parser.add_argument("--out", default="attention_profile.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA (FlexAttention's kernels)", file=sys.stderr)
        return 1
    torch._dynamo.config.recompile_limit = 64
    rows = [r for T, B in attention_shapes(args.lengths, args.tokens) for r in profile_length(T, B, stack=args.stack)]
    print("\n| tokens | layer | wall ms a layer | kernel ms a layer | kernels a layer | host-bound share |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']:,} | {r['layer']} | {r['wall_ms']:.3f} | {r['kernel_ms']:.3f} | {r['kernels']:g} | "
              f"{max(0.0, 1 - r['kernel_ms'] / r['wall_ms']):.0%} |")
    for r in rows:
        print(f"\n{r['layer']} at {r['tokens']:,} tokens, top kernels (name, ms a step, calls a step):")
        for key, ms, n in r["top_kernels"]:
            print(f"  {ms:8.4f}  {n:5g}  {key}")
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
