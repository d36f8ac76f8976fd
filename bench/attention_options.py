"""The sparse attention layer under FlexAttention's kernel options and Inductor's wrapper (issue 20).

Times the layer as training runs it (block selection, BlockMask building and FlexAttention in one
compiled graph, forward + backward, ``attention._flex_sparse``) once per variant: the default
kernel configuration as autotune ships it (``attention.flex_kernel_options``), named tile sizes /
stages / warps for the forward (``fwd_*``) or backward (``bwd_*``) kernel, TMA loads, the FLASH backend
(flash-attn-4's CuTe kernels, where installed: ``bench/device_flash.sh``), and Inductor's
C++ wrapper (less host time a call: what a small layer waits on at 1k tokens). Dense flash SDPA beside it, same inputs. A variant
that fails to compile (an option the installed torch lacks, a configuration that does not fit
shared memory) is reported with its error, not fatal. Each variant's output and gradients are
checked against the default's. Prints a table and writes JSON.

    python3 bench/attention_options.py --lengths 1024 16384 --out /tmp/attention_options.json
    python3 bench/attention_options.py --list          # the variants, without a GPU
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def _bwd(m1: int, n1: int, m2: int, n2: int, stages: int, warps: int) -> dict:
    """The backward kernel's tiles: dK/dV ``m1`` queries x ``n1`` keys, dQ ``m2`` x ``n2``."""
    return {"bwd_BLOCK_M1": m1, "bwd_BLOCK_N1": n1, "bwd_BLOCK_M2": m2, "bwd_BLOCK_N2": n2,
            "bwd_num_stages": stages, "bwd_num_warps": warps}


def _fwd(m: int, n: int, stages: int, warps: int) -> dict:
    return {"fwd_BLOCK_M": m, "fwd_BLOCK_N": n, "fwd_num_stages": stages, "fwd_num_warps": warps}


# name -> (kernel_options, inductor config patch)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "tma": ({"USE_TMA": True}, {}),
    "fwd 128x64 s3 w4": (_fwd(128, 64, 3, 4), {}),
    "fwd 128x128 s2 w8": (_fwd(128, 128, 2, 8), {}),
    "bwd 64/64 s3 w4": (_bwd(64, 64, 64, 64, 3, 4), {}),
    "bwd 32/128 s3 w4": (_bwd(32, 128, 128, 32, 3, 4), {}),
    "bwd 64/128 s4 w8": (_bwd(64, 128, 128, 64, 4, 8), {}),
    "bwd 64/128 s2 w8": (_bwd(64, 128, 128, 64, 2, 8), {}),
    "bwd 32/128 s4 w4": (_bwd(32, 128, 128, 32, 4, 4), {}),
    "bwd 32/128 s2 w4": (_bwd(32, 128, 128, 32, 2, 4), {}),
    "bwd 32/128 s3 w8": (_bwd(32, 128, 128, 32, 3, 8), {}),
    "bwd 32/64 s3 w4": (_bwd(32, 64, 64, 32, 3, 4), {}),
    "bwd 32/128 dq 64/64 s3 w4": (_bwd(32, 128, 64, 64, 3, 4), {}),
    "bwd 64/64 s4 w4": (_bwd(64, 64, 64, 64, 4, 4), {}),
    "bwd 16/128 s3 w4": (_bwd(16, 128, 128, 16, 3, 4), {}),
    "bwd 32/128 s3 w4, fwd 128x64": ({**_bwd(32, 128, 128, 32, 3, 4), **_fwd(128, 64, 3, 4)}, {}),
    "prescale": ({"PRESCALE_QK": True}, {}),
    "flash": ({}, {}),          # BACKENDS below: the model's own switch
    "cpp wrapper": ({}, {"cpp_wrapper": True}),
}
# name -> ``attention.FLEX_BACKEND`` while the variant compiles and runs: flash-attn-4's CuTe DSL kernels
# instead of Triton's (torch >= 2.10; needs flash_attn.cute, which the device image lacks:
# bench/flash_carry.sh and bench/device_flash.sh bring it)
BACKENDS = {"flash": "FLASH"}


def run_variant(name: str, q, k, v, grad, bs: int, window: int, keep: float, reference=None) -> dict:
    import torch
    from autotune.model import attention as attn
    from bench.model_speed import bench_ms

    options, patch = VARIANTS[name]
    torch._dynamo.reset()
    backend = mock.patch.object(attn, "FLEX_BACKEND", BACKENDS.get(name))   # read as the graph is traced
    with torch._inductor.config.patch(patch), backend:
        fn = torch.compile(attn._flex_sparse, dynamic=False)

        def step():
            q.grad = k.grad = v.grad = None
            fn(q, k, v, bs, window, keep, options).backward(grad)
        try:
            step()
            out = fn(q, k, v, bs, window, keep, options).detach()
            grads = [x.grad.detach().clone() for x in (q, k, v)]
            ms = bench_ms(step)
        except Exception as exc:  # noqa: BLE001 - a variant the installed torch or GPU cannot run
            return {"variant": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
    row = {"variant": name, "ms": ms}
    if reference is not None:        # against the default's output and gradients (bf16: loose)
        row["max_abs_diff"] = max(float((a.float() - b.float()).abs().max())
                                  for a, b in zip([out, *grads], reference))
    row["_result"] = [out, *grads]
    return row


def relative(rows: list[dict]) -> list[dict]:
    """Each timed row's speed against its length's default variant and dense SDPA (x > 1: faster)."""
    for r in rows:
        base = next((d.get("ms") for d in rows if d["tokens"] == r["tokens"] and d["variant"] == "default"), None)
        if "ms" in r and base:
            r["x_default"], r["x_dense"] = base / r["ms"], r["dense_ms"] / r["ms"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| tokens | variant | ms | x default | x dense | max abs diff vs default |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" not in r:
            lines.append(f"| {r['tokens']} | {r['variant']} | failed: {r.get('error', '?')[:80]} | | | |")
            continue
        diff = f"{r['max_abs_diff']:.3g}" if "max_abs_diff" in r else "-"
        lines.append(f"| {r['tokens']} | {r['variant']} | {r['ms']:.3f} | {r['x_default']:.3f} | "
                     f"{r['x_dense']:.3f} | {diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens a batch (batch = tokens // length)")
    parser.add_argument("--keep", type=float, default=0.2)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.list:
        for name, (options, patch) in VARIANTS.items():
            print(f"{name}: kernel_options {options or '{}'}, inductor {patch or '{}'}"
                  + (f", attention.FLEX_BACKEND {BACKENDS[name]}" if name in BACKENDS else ""))
        return 0
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("bench/attention_options.py needs CUDA (FlexAttention's Triton kernels)", file=sys.stderr)
        return 1
    from bench.model_speed import bench_ms
    H, D = 16, 64
    names = ["default"] + [n for n in args.variants if n != "default"]
    rows = []
    for T in args.lengths:
        B = max(1, args.tokens // T)
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)

        def dense():
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)
        dense_ms = bench_ms(dense)
        reference = None
        for name in names:
            row = run_variant(name, q, k, v, grad, args.block_size, args.window, args.keep, reference)
            result = row.pop("_result", None)
            if name == "default":
                reference = result
            row.update(tokens=T, batch=B, dense_ms=dense_ms)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v, grad
        torch.cuda.empty_cache()
    print(table(relative(rows)))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "machine": platform.platform(), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "command": sys.argv, "heads": H, "head_dim": D, "keep": args.keep, "window": args.window,
            "block_size": args.block_size, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
