"""How fast the model's parts run on one GPU, each beside its dense reference in the same process.

Sections (``--only`` picks some):
- ``attention``: sparse attention (window 128 + top blocks, keep 0.2, 128-token blocks; block selection
  and mask building INCLUDED) against dense causal flash SDPA, forward + backward, H=16, D=64, bf16,
  32k tokens a batch (``--tokens``; one sequence a batch where a sequence is longer), 1k..16k tokens
  (``--lengths ... 32768 65536`` adds the long ones); time, peak memory; plus kernel-only and
  selection-only times.
- ``moe``: MoE layer (8 and 32 experts, top-2) against a dense SwiGLU FFN of the same active FLOPs,
  T=16,384, d_model 1,024, d_ff 2,048, forward + backward, bf16; and where the MoE time goes; plus
  adaptive top-k (router_threshold 0.5, top-4), its TFLOP/s over the experts tokens really used.
- ``train``: full training steps (AdamW, bf16 autocast, torch.compile) of the ``moe_sparse`` study's
  middle configuration: tokens/s, peak memory, MFU against 792 TFLOP/s (over the realised experts per
  token); ``--train-configs ... length adaptive`` adds issue 20's adaptive modes.

Prints one table per section and writes everything to ``$OUT/model_speed.json`` (or ``--json``).
Timing: ``triton.testing.do_bench`` medians (CUDA events).

    python bench/model_speed.py --only attention moe train
    python bench/model_speed.py --only attention --lengths 1024 16384 32768 65536 --plan   # shapes, no GPU
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import replace
from unittest import mock

import torch
import torch._inductor.config
import torch.nn.functional as F

from autotune.model import ModelConfig, Transformer
from autotune.model import attention as attn
from autotune.model.moe import MoE, FeedForward

PEAK_TFLOPS = 792.0


def bench_ms(fn, warmup=100, rep=400) -> float:
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def peak_mib(fn) -> float:
    """Peak memory a call allocates beyond what was allocated before it, MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def table(title: str, header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = [f"\n## {title}", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- attention
def attention_shapes(lengths, tokens=32768) -> list[tuple[int, int]]:
    """``(sequence length, batch)`` of each attention row: ``tokens`` a batch, at least one sequence
    (a length past ``tokens`` runs one sequence: 64k at 32k tokens a batch is batch 1, not 0)."""
    return [(T, max(1, tokens // T)) for T in lengths]


def bench_attention(lengths, tokens=32768, H=16, D=64, bs=128, window=128, keep=0.2, crossover=0,
                    modes=("default",), tune_lengths=()) -> tuple[list[dict], str]:
    """``modes`` past the first (e.g. max-autotune-no-cudagraphs, slow to compile) run only at ``tune_lengths``."""
    results = []
    compiled = {m: torch.compile(attn._flex_sparse, dynamic=False,
                                 mode=None if m == "default" else m) for m in modes}
    build = torch.compile(lambda q, k: attn.build_flex_block_mask(attn.select_blocks(q, k, bs, window, keep)),
                          dynamic=False)
    from torch.nn.attention.flex_attention import flex_attention
    flex_only = torch.compile(flex_attention, dynamic=False)
    for T, B in attention_shapes(lengths, tokens):
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)

        def step(f):
            def run():
                q.grad = k.grad = v.grad = None
                f().backward(grad)
            return run

        dense = step(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        row = {"tokens": T, "batch": B, "kept_share": attn.kept_share(T, bs, window, keep)}
        row["dense_ms"] = bench_ms(dense)
        row["dense_mib"] = peak_mib(dense)
        causal_flops = 3.5 * 2 * 2 * B * H * T * T * D / 2         # fwd (2 matmuls, causal half) + bwd 2.5x
        row["dense_tflops"] = causal_flops / row["dense_ms"] / 1e9
        for m, fn in compiled.items():
            if m != modes[0] and T not in tune_lengths:
                continue
            sparse = step(lambda: fn(q, k, v, bs, window, keep))
            row[f"sparse_{m}_ms"] = bench_ms(sparse)
            row[f"sparse_{m}_mib"] = peak_mib(sparse)
        if crossover:
            # dense below the crossover: a float ratio of 1.0 runs dense SDPA
            auto = step(lambda: attn.sparse_attention(q, k, v, block_size=bs, window=window,
                                                      keep_ratio=1.0 if T < crossover else keep))
            row["auto_ms"] = bench_ms(auto)
        try:
            with torch.no_grad():
                row["select_build_ms"] = bench_ms(lambda: build(q, k))
            mask = build(q.detach(), k.detach())
            row["kernel_only_ms"] = bench_ms(step(lambda: flex_only(q, k, v, block_mask=mask)))
        except Exception as exc:                                    # diagnostic only
            row["kernel_only_error"] = repr(exc)[:300]
        results.append(row)
        print(json.dumps(row), flush=True)
        del q, k, v, grad
        torch.cuda.empty_cache()
    m0 = modes[0]
    rows = []
    for r in results:
        sp = r[f"sparse_{m0}_ms"]
        rows.append([r["tokens"], round(r["kept_share"], 3), r["dense_ms"], r["dense_tflops"], sp,
                     r["dense_ms"] / sp, r["dense_ms"] / r["auto_ms"] if "auto_ms" in r else float("nan"),
                     r.get("select_build_ms", float("nan")), r.get("kernel_only_ms", float("nan")),
                     r["dense_mib"], r[f"sparse_{m0}_mib"]]
                    + [r["dense_ms"] / r.get(f"sparse_{m}_ms", float("nan")) for m in modes[1:]])
    header = ["tokens", "kept", "dense ms", "dense TFLOP/s", "sparse ms", "speedup",
              f"speedup (dense below {crossover})", "select+mask ms", "kernel-only ms", "dense MiB", "sparse MiB"]
    header += [f"speedup {m}" for m in modes[1:]]
    return results, table(f"attention fwd+bwd, H={H} D={D}, {tokens} tokens/batch (1 sequence at longer "
                          f"lengths), keep {keep}, window {window}, "
                          f"block {bs} (sparse includes selection + mask build)", header, rows)


# ---------------------------------------------------------------------------------------------- MoE
def bench_moe(expert_counts=(8, 32), T=16384, d_model=1024, d_ff=2048, top_k=2, profile=True,
              adaptive=(0.5,)) -> tuple[list[dict], str]:
    torch.manual_seed(0)
    x = torch.randn(1, T, d_model, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)
    flops = 6 * T * 3 * d_model * d_ff * top_k                     # fwd+bwd of the active SwiGLU matmuls

    def step(module):
        def run():
            x.grad = None
            for p in module.parameters():
                p.grad = None
            out = module(x)
            (out[0] if isinstance(out, tuple) else out).backward(grad)
        return run

    dense = FeedForward(d_model, top_k * d_ff).cuda().bfloat16()
    results = [{"variant": "dense FFN", "experts": 1, "ms": bench_ms(step(dense))}]
    results.append({"variant": "dense FFN compiled", "experts": 1, "ms": bench_ms(step(torch.compile(dense)))})
    dense_ms = min(r["ms"] for r in results)
    for E in expert_counts:
        moe = MoE(d_model, d_ff, E, top_k).cuda().bfloat16()
        for impl, comp in (("loop", False), ("grouped", False), ("grouped", True)):
            moe.impl = impl
            fn = step(torch.compile(moe) if comp else moe)
            results.append({"variant": f"MoE {impl}{' compiled' if comp else ''}", "experts": E, "ms": bench_ms(fn)})
            print(json.dumps(results[-1]), flush=True)
        for p in adaptive:              # adaptive top-k: TFLOP/s over the experts tokens really used
            ada = MoE(d_model, d_ff, E, 4, router_threshold=p).cuda().bfloat16()
            ada.impl = "grouped"
            with torch.no_grad():
                used = ada(x)[1].experts_per_token.item()
            results.append({"variant": f"MoE grouped compiled, threshold {p}, top-4", "experts": E,
                            "ms": bench_ms(step(torch.compile(ada))), "experts_per_token": used,
                            "flops": 6 * T * 3 * d_model * d_ff * used})
            print(json.dumps(results[-1]), flush=True)
        if profile:
            moe.impl = "grouped"
            results.append({"variant": "profile", "experts": E, "top_kernels": profile_kernels(step(torch.compile(moe)))})
    rows = []
    for r in results:
        if "ms" in r:
            r["tflops"] = r.get("flops", flops) / r["ms"] / 1e9
            r["vs_dense"] = dense_ms / r["ms"]
            rows.append([r["variant"], r["experts"], r["ms"], r["tflops"], r["vs_dense"]])
    text = table(f"MoE layer fwd+bwd, T={T}, d_model {d_model}, d_ff {d_ff}, top-{top_k}, bf16 "
                 f"(dense FFN: d_ff {top_k * d_ff}, same active FLOPs)",
                 ["variant", "experts", "ms", "TFLOP/s", "x dense (best dense)"], rows)
    for r in results:
        if r["variant"] == "profile":
            text += f"\n\nwhere {r['experts']}-expert grouped MoE (compiled) time goes (kernel, ms per step, calls):\n"
            text += "\n".join(f"  {ms:7.3f}  {n:3d}  {name[:90]}" for name, ms, n in r["top_kernels"][:12])
    return results, text


def profile_kernels(fn, steps=5) -> list[tuple[str, float, int]]:
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / 1e3 / steps, e.count // steps) for e in prof.key_averages()
            if e.device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])


# -------------------------------------------------------------------------------------------- train
MIDDLE = ModelConfig(vocab_size=256, d_model=384, n_layers=5, n_heads=8, d_ff=1024, num_experts=8, top_k=2,
                     aux_loss_coef=0.007, attention="sparse", window=128, keep_ratio=0.45, block_size=128,
                     max_seq_len=2048)


def bench_train(configs: dict[str, tuple[ModelConfig, int, int]], steps=20, profile=False) -> tuple[list[dict], str]:
    results, profiles = [], []
    for name, (cfg, batch, seq_len, *pins) in configs.items():
        torch.manual_seed(0)
        pins = dict(pins[0]) if pins else {}
        mode = pins.pop("compile_mode", None)                       # e.g. reduce-overhead: CUDA graphs
        settings = contextlib.ExitStack()     # read as the model compiles (its first steps); undone after
        settings.enter_context(mock.patch.object(attn, "FLEX_BACKEND", pins.pop("flex_backend", None)))
        settings.enter_context(torch._inductor.config.patch(pins.pop("inductor", {})))
        model = Transformer(cfg).cuda()
        for attr, value in pins.items():   # e.g. MoE.adaptive_layout, Experts.swiglu_kernel
            for module in model.modules():
                if hasattr(module, attr):
                    setattr(module, attr, value)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        forward = torch.compile(model, mode=mode)
        tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device="cuda")

        experts_per_token = []

        def train_step():
            torch.compiler.cudagraph_mark_step_begin()   # a new step (CUDA graphs may reuse last step's outputs)
            with torch.autocast("cuda", torch.bfloat16):
                logits, aux = forward(tokens[:, :-1])
                experts_per_token.append(aux.experts_per_token.detach().clone())
                loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()) + aux.aux_loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        t0 = time.time()
        for _ in range(3):
            train_step()
        torch.cuda.synchronize()
        compile_s = time.time() - t0
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = train_step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        ms = sorted(times)[len(times) // 2]
        tps = batch * seq_len / ms * 1e3
        used = float(torch.stack(experts_per_token[-steps:]).mean())     # realised (adaptive top-k)
        row = {"config": name, "batch": batch, "seq_len": seq_len, "step_ms": ms, "tokens_per_s": tps,
               "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
               "params_total": model.num_parameters(), "experts_per_token": used,
               "params_active": model.num_parameters(active=True, active_experts=used),
               "flops_per_token": model.flops_per_token(seq_len, active_experts=used), "compile_s": compile_s,
               "loss": float(loss.detach())}
        row["mfu"] = row["flops_per_token"] * tps / (PEAK_TFLOPS * 1e12)
        if profile:
            row["top_kernels"] = profile_kernels(train_step, steps=3)
            profiles.append((name, row["top_kernels"]))
        results.append(row)
        print(json.dumps(row), flush=True)
        del model, opt, forward
        settings.close()
        torch.cuda.empty_cache()
    rows = [[r["config"], f"{r['batch']}x{r['seq_len']}", r["step_ms"], f"{r['tokens_per_s']:.0f}",
             r["peak_mem_gib"], f"{r['params_active'] / 1e6:.1f}M / {r['params_total'] / 1e6:.1f}M",
             f"{100 * r['mfu']:.1f}%"] for r in results]
    text = table("training step (AdamW, bf16 autocast, torch.compile)",
                 ["config", "batch", "step ms", "tokens/s", "peak GiB", "active/total params",
                  "MFU (792 TFLOP/s)"], rows)
    for name, kernels in profiles:
        busy = sum(ms for _, ms, _ in kernels)
        step_ms = next(r["step_ms"] for r in results if r["config"] == name)
        text += (f"\n\nwhere a step of '{name}' goes: kernels {busy:.1f} ms of a {step_ms:.1f} ms step "
                 f"(the rest: the GPU waiting on the host); kernel, ms per step, calls:\n")
        text += "\n".join(f"  {ms:7.3f}  {n:3d}  {k[:90]}" for k, ms, n in kernels[:25])
    return results, text


def train_configs() -> dict[str, tuple]:
    """The training-step configurations by name: (title, ModelConfig, optional pins)."""
    middle_dense = replace(MIDDLE, attention="dense")
    return {
        "sparse": ("moe_sparse middle (sparse attn)", MIDDLE),
        "dense": ("same, dense attn", middle_dense),
        "dense_below": ("same, sparse attn, dense below 4096",
                        replace(MIDDLE, keep_schedule="length", keep_short=1.0, keep_long=MIDDLE.keep_ratio,
                                short_len=4095, long_len=4096)),
        "length": ("same, keep_schedule length (0.8 at 256 -> 0.2 at 1024)",
                   replace(MIDDLE, keep_schedule="length")),
        "keep02": ("same, fixed keep 0.2 (length's counterpart at 2,048 tokens)",
                   replace(MIDDLE, keep_ratio=0.2)),
        "adaptive": ("same, router_threshold 0.6, top_k 4", replace(MIDDLE, router_threshold=0.6, top_k=4)),
        "adaptive_static": ("same, router_threshold 0.6, top_k 4, static layout",
                            replace(MIDDLE, router_threshold=0.6, top_k=4), {"adaptive_layout": "static"}),
        "adaptive_torch": ("same, router_threshold 0.6, top_k 4, compact, Inductor's SwiGLU",
                           replace(MIDDLE, router_threshold=0.6, top_k=4), {"swiglu_kernel": "torch"}),
        "top3": ("same, fixed top_k 3", replace(MIDDLE, top_k=3)),
        "top3_torch": ("same, fixed top_k 3, Inductor's SwiGLU", replace(MIDDLE, top_k=3),
                       {"swiglu_kernel": "torch"}),
        "top4": ("same, fixed top_k 4", replace(MIDDLE, top_k=4)),
        "sparse_flash": ("same as sparse, FlexAttention's FLASH backend", MIDDLE, {"flex_backend": "FLASH"}),
        "sparse_cg": ("same as sparse, CUDA graphs (compile mode reduce-overhead)", MIDDLE,
                      {"compile_mode": "reduce-overhead"}),
        "sparse_flash_cg": ("same as sparse, FLASH backend and CUDA graphs", MIDDLE,
                            {"flex_backend": "FLASH", "compile_mode": "reduce-overhead"}),
        "sparse_cdt": ("same as sparse, Inductor coordinate-descent tuning", MIDDLE,
                       {"inductor": {"coordinate_descent_tuning": True}}),
        "sparse_cg_cdt": ("same as sparse, CUDA graphs and coordinate-descent tuning", MIDDLE,
                          {"compile_mode": "reduce-overhead", "inductor": {"coordinate_descent_tuning": True}}),
    }


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive whole number")
    return value


def main(argv=None) -> int:
    configs = train_configs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["attention", "moe", "train"])
    parser.add_argument("--lengths", nargs="+", type=positive, default=[1024, 2048, 4096, 8192, 16384],
                        help="attention sequence lengths, e.g. 1024 16384 32768 65536")
    parser.add_argument("--tokens", type=positive, default=32768,
                        help="attention tokens a batch (batch = tokens // length, at least 1)")
    parser.add_argument("--plan", action="store_true",
                        help="print the attention shapes each length would run and exit (no GPU needed)")
    parser.add_argument("--modes", nargs="+", default=["default"],
                        help="torch.compile modes for the sparse path, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--train-configs", nargs="+", default=["sparse", "dense", "dense_below"],
                        choices=list(configs), metavar="NAME",
                        help="; ".join(f"{name}: {title}" for name, (title, *_) in configs.items()))
    parser.add_argument("--profile", action="store_true", help="profile the training steps' kernels")
    parser.add_argument("--tune-lengths", nargs="+", type=int, default=[8192, 16384])
    parser.add_argument("--crossover", type=int, default=1024, help="dense below this length in the 'auto' column")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "model_speed.json"))
    args = parser.parse_args(argv)
    if args.plan:
        for T, B in attention_shapes(args.lengths, args.tokens):
            q_mib = B * 16 * T * 64 * 2 / 2**20
            print(f"attention: {T} tokens x batch {B} ({B * T} tokens), q/k/v {q_mib:.0f} MiB each (H=16, D=64, bf16)")
        return 0
    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 1
    torch._dynamo.config.recompile_limit = 64       # one compiled graph per length and grad mode
    torch._dynamo.config.capture_scalar_outputs = True   # as the trainer compiles: MoE sizes from the data
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    texts = []
    if "attention" in args.only:
        report["attention"], text = bench_attention(args.lengths, tokens=args.tokens, crossover=args.crossover,
                                                    modes=tuple(args.modes),
                                                    tune_lengths=tuple(args.tune_lengths))
        texts.append(text)
    if "moe" in args.only:
        report["moe"], text = bench_moe()
        texts.append(text)
    if "train" in args.only:
        report["train"], text = bench_train(
            {configs[c][0]: (configs[c][1], 32, 2048, *configs[c][2:]) for c in args.train_configs},
            profile=args.profile)
        texts.append(text)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n# {report['device']}, torch {report['torch']}, {report['date']}")
    print("\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
