"""Token-budget against cost-model batching (``trainer.batching``) on text of variable-length documents.

Trains the same model on the same generated text twice through ``autotune.train.train``: once with
``batching: tokens`` (every batch within ``tokens_per_batch`` padded tokens) and once with
``batching: cost`` (after the warm-up the loop fits a per-batch cost model to timed steps and lets
each batch cost what a full-length token batch costs, at most ``--max-batch-size`` sequences and
``--max-batch-tokens`` padded tokens). Same steps for both. Reports for each: tokens/s (real tokens
of the steady steps), step ms, the final validation loss (the same validation batches for both), and
"at the same loss": the training seconds (evaluation steps x mean step time) and tokens each needed
to first reach the worse of the two final losses, and the tokens/s that makes.

The text: ``--docs`` documents (one a line, ``eot_token`` 10), lengths log-uniform between 8 and
``2 x --seq-len`` bytes, of words drawn from a Zipf vocabulary (learnable: a model beats uniform
bytes within a few hundred steps). Prints a table and writes JSON (``--json``, default
``$OUT/batching_speed.json``).

    python bench/batching_speed.py                                  # CPU: small model, dense attention
    python bench/batching_speed.py --device cuda --seq-len 4096 --tokens-per-batch 65536 \\
        --d-model 384 --layers 5 --attention sparse --steps 600     # GPU (to be run on a GPU)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.model import ModelConfig          # noqa: E402
from autotune.train import TrainConfig, train   # noqa: E402


def write_documents(path: Path, docs: int, longest: int, seed: int = 0) -> dict:
    """``docs`` lines of Zipf-drawn words, lengths log-uniform in [8, longest] bytes."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(n)))
             for n in rng.integers(2, 9, size=400)]
    probs = 1.0 / np.arange(1, len(words) + 1)
    probs /= probs.sum()
    lengths = np.exp(rng.uniform(np.log(8), np.log(longest), size=docs)).astype(int)
    lines = []
    for n in lengths:
        text = ""
        while len(text) < n:
            text += words[rng.choice(len(words), p=probs)] + " "
        lines.append(text[:n])
    path.write_text("\n".join(lines) + "\n")
    return {"docs": docs, "bytes": path.stat().st_size, "median_doc_bytes": int(np.median(lengths))}


def run(mode: str, model: ModelConfig, cfg: TrainConfig) -> dict:
    curve = []

    def report(step: int, metrics: dict) -> bool:
        curve.append((step, metrics["val_loss"]))
        print(f"  {mode}: step {step}, val_loss {metrics['val_loss']:.4f}", flush=True)
        return True

    def progress(step: int, metrics: dict) -> None:    # where a run is, should it die (a GPU fault aborts)
        print(f"  {mode}: step {step}, train_loss {metrics['train_loss']:.4f}", flush=True)

    print(f"{mode} batching: training", flush=True)
    result = train(model, TrainConfig(**{**cfg.__dict__, "batching": mode}), report, progress=progress)
    return {"mode": mode, "tokens_per_s": result["tokens_per_s"], "step_ms": result["step_ms"],
            "val_loss": result["val_loss"], "train_s": result["train_s"], "curve": curve,
            "batching": result.get("batching")}


def at_loss(row: dict, target: float) -> dict:
    """Seconds (evaluation step x mean step time) and tokens (seconds x tokens/s) to reach ``target``."""
    step = next((s for s, loss in row["curve"] if loss <= target), None)
    if step is None:
        return {"step": None, "seconds": float("nan"), "tokens": float("nan")}
    seconds = step * row["step_ms"] / 1e3
    return {"step": step, "seconds": seconds, "tokens": seconds * row["tokens_per_s"]}


def _compile_mode(args) -> str | bool:
    if args.compile is None:
        return False if args.device == "cpu" else "auto"
    return {"auto": "auto", "true": True, "false": False}[args.compile]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--tokens-per-batch", type=int, default=2048)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default 2 x tokens-per-batch")
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--attention", default="dense", choices=["dense", "sparse"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", default=None, choices=["auto", "true", "false"],
                        help="the trainer's compile (default: false on a CPU, auto elsewhere)")
    parser.add_argument("--modes", default="tokens,cost", help="batching modes to run, comma-separated")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "batching_speed.txt")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "batching_speed.json"))
    args = parser.parse_args(argv)

    corpus = write_documents(args.data, args.docs, 2 * args.seq_len)
    model = ModelConfig(d_model=args.d_model, n_layers=args.layers, n_heads=max(1, args.d_model // 64) * 2,
                        d_ff=2 * args.d_model, num_experts=4, top_k=2, attention=args.attention,
                        window=128, block_size=128, keep_ratio=0.3)
    cfg = TrainConfig(task="text", data_path=str(args.data), eot_token=10, seq_len=args.seq_len,
                      tokens_per_batch=args.tokens_per_batch, max_batch_size=args.max_batch_size,
                      max_batch_tokens=args.max_batch_tokens, steps=args.steps, eval_every=args.eval_every,
                      eval_batches=8, lr=3e-3, device=args.device, threads=args.threads,
                      compile=_compile_mode(args))
    rows = [run(mode, model, cfg) for mode in args.modes.split(",")]
    target = max(r["val_loss"] for r in rows)
    for r in rows:
        r["at_target"] = at_loss(r, target)
    base = rows[0]
    print(f"\n## tokens vs cost batching: {args.device}, seq_len {args.seq_len}, {args.tokens_per_batch} tokens a "
          f"token batch, {args.attention} attention, d_model {args.d_model} x {args.layers} layers, {args.steps} steps; "
          f"{corpus['docs']} documents (median {corpus['median_doc_bytes']} bytes)")
    print(f"| batching | tokens/s | x tokens | step ms | val_loss | s to val_loss {target:.3f} | x faster |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["at_target"]
        print(f"| {r['mode']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f} | "
              f"{r['step_ms']:.1f} | {r['val_loss']:.3f} | {t['seconds']:.1f} | "
              f"{base['at_target']['seconds'] / t['seconds']:.2f} |")
    fit = next((r["batching"] for r in rows if r["mode"] == "cost"), None)
    if fit:
        print(f"\ncost model fitted at step {fit['fitted_at']}: fixed {fit['fixed_s'] * 1e3:.2f} ms, "
              f"{fit['per_token_s'] * 1e6:.3f} us a token, {fit['per_pair_s'] * 1e9:.3f} ns an attention pair")
    report = {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": {k: str(v) for k, v in vars(args).items()},
              "corpus": corpus, "target_val_loss": target, "rows": rows}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
