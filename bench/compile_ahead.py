"""Compiling in a helper process against compiling in the foreground, one trial at a time (issue 15).

Each variant trains the same model for the same steps in its own process with its own empty
compile caches (TORCHINDUCTOR_CACHE_DIR), so none inherits another's graphs:
  eager:      ``compile: false``
  foreground: ``compile: auto`` forced to compile after its probe steps, stalling the trial
  ahead:      the same, compiled by ``CompileAhead``'s helper process while the trial trains eager,
              then loaded from the caches it filled (autotune's default); the helper starts at the
              trial's first compile
  ahead-warm: the same, with the helper started as the process starts (a worker of a study whose
              trials compiled ahead before starts it so, and every later trial of a worker finds
              it warm), so that it is warm when the trial's compile comes
Prints wall seconds, the share in training steps, the trial's compile cost, the helper's wall time,
eager and compiled step times and the FX graphs the trial compiled itself after the switch (0 = all
loaded from the helper's caches; the --tiny backend caches nothing), and writes JSON. The default
model is the moe_sparse trial that compiled in the H100 run of 2026-12-06 (bench/RESULTS.md).

  python bench/compile_ahead.py --steps 600 --out out/compile_ahead.json
  python bench/compile_ahead.py --attention sparse --keep-ratio 0.45 ...
  python bench/compile_ahead.py --tiny      # a CPU smoke test of this script (aot_eager backend)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("eager", "foreground", "ahead", "ahead-warm")


def run_variant(args) -> dict:
    """In this process: train once as ``args.variant`` says; the result's figures."""
    import torch
    from torch._dynamo.utils import counters

    import autotune.train as T
    from autotune.compile_policy import CompileCosts
    from autotune.model import ModelConfig

    if args.tiny:
        T.auto_compiles = lambda device: True
        T.COMPILE_BACKEND = "aot_eager"
    if args.variant == "ahead-warm":
        from autotune.compile_ahead import prestart
        prestart()
    if args.variant == "foreground":
        T._Trainer.compile_ahead = lambda self: (None, "foreground by the bench")
    model = ModelConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, d_ff=args.d_ff,
                        num_experts=args.experts, top_k=args.top_k, router_threshold=args.router_threshold,
                        attention=args.attention, keep_ratio=args.keep_ratio, window=args.window,
                        block_size=args.block_size)
    cfg = T.TrainConfig(task="mqar", seq_len=args.seq_len, num_pairs=args.num_pairs, task_vocab=256,
                        batch_size=args.batch_size, steps=args.steps, eval_every=args.eval_every,
                        precision="bf16" if torch.cuda.is_available() else "fp32",
                        compile=False if args.variant == "eager" else "auto", threads=0 if not args.tiny else 1)
    graphs = {}

    def report(step, metrics):
        graphs[step] = counters["inductor"]["fxgraph_cache_miss"]
        return True

    costs = CompileCosts(speedup=10.0, compile_s=0.0, ahead_s=0.0, ahead_compile_s=0.0, trials=1)     # always compile
    m = T.train(model, cfg, report, compile_costs=costs)
    c, parts = m["compile"], m["time_s"]
    steps_done = sorted(graphs)
    after = graphs[steps_done[-1]] - graphs[steps_done[len(steps_done) // 2]] if len(steps_done) > 1 else 0
    return {"variant": args.variant, "wall_s": m["train_s"], "train_share": parts["train"] / m["train_s"],
            "compile_s": parts["compile"], "ahead_s": c.get("ahead_s"),
            "ahead_phases": c.get("ahead_phases"), "compiled": c["compiled"],
            "eager_step_ms": c.get("eager_step_ms"), "compiled_step_ms": c.get("compiled_step_ms"),
            "fx_compiled_second_half": after, "latency_ms": m.get("latency_ms"), "val_loss": m.get("val_loss"),
            "time_s": parts, "reason": c.get("reason")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)      # one child process
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--router-threshold", type=float, default=0.36)
    parser.add_argument("--attention", choices=["dense", "sparse"], default="dense")
    parser.add_argument("--keep-ratio", type=float, default=0.45)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--num-pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a small model, aot_eager")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "compile_ahead.json"))
    args = parser.parse_args()
    if args.tiny:
        args.d_model, args.layers, args.heads, args.d_ff, args.experts, args.top_k = 32, 2, 2, 64, 1, 1
        args.attention, args.seq_len, args.num_pairs, args.batch_size = "dense", 32, 4, 4
        args.steps, args.eval_every = min(args.steps, 60), 20
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return
    rows, failed = [], []
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
            argv = [a for a in sys.argv[1:] if a not in ("--variants", *VARIANTS)]
            out = subprocess.run([sys.executable, __file__, *argv, "--variant", variant], env=env,
                                 capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not lines:
                print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
                print(f"variant {variant} failed (exit {out.returncode})", file=sys.stderr, flush=True)
                failed.append(variant)
                continue
            rows.append(json.loads(lines[-1][len("RESULT "):]))
            print(rows[-1], flush=True)
            if rows[-1].get("ahead_phases"):
                print(f"{variant}: the helper's seconds {rows[-1]['ahead_phases']}", flush=True)
    header = ["variant", "wall s", "in steps", "compile s", "ahead s", "eager ms", "compiled ms", "FX graphs compiled, 2nd half"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
    for r in rows:
        print("| " + " | ".join(fmt(r[k]) for k in ("variant", "wall_s", "train_share", "compile_s", "ahead_s",
                                                     "eager_step_ms", "compiled_step_ms", "fx_compiled_second_half")) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "failed": failed}, indent=2))
    if failed:
        raise SystemExit(f"failed: {' '.join(failed)}")


if __name__ == "__main__":
    main()
