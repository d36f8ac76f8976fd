"""Does CUDA MPS help several small trials share one GPU? (issue 15: trials per GPU-hour.)

Trains K copies of gpu_smoke-like configurations at once on one GPU, eager, each in its own process
(as autotune's slots do), and compares the aggregate training-step rate of three layouts:

- ``solo``: one process, the K configurations one after another (what plain Optuna does);
- ``shared``: K processes at once, the GPU time-sliced between their CUDA contexts (today's slots);
- ``mps``: K processes at once through an MPS control daemon started for the run, so kernels of
  different processes run on the SMs side by side.

Each process first trains a short warm-up (FlexAttention's graphs, CUDA context) and waits on a
barrier, so only training steps are timed. Prints a table and writes JSON.

    python bench/mps_probe.py --procs 4 --steps 200 --more-mps 8 --out out/mps_probe.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = [  # gpu_smoke's space: one sparse and one dense of each width
    {"attention": "sparse", "d_model": 256, "n_layers": 3, "batch_size": 64, "num_experts": 8, "top_k": 2,
     "keep_ratio": 0.5, "window": 128},
    {"attention": "dense", "d_model": 128, "n_layers": 2, "batch_size": 32, "num_experts": 4, "top_k": 1},
    {"attention": "sparse", "d_model": 128, "n_layers": 4, "batch_size": 32, "num_experts": 4, "top_k": 2,
     "keep_ratio": 0.3, "window": 64},
    {"attention": "dense", "d_model": 256, "n_layers": 3, "batch_size": 64, "num_experts": 8, "top_k": 2},
]
TRAINER = {"task": "mqar", "seq_len": 512, "num_pairs": 8, "num_queries": 64, "task_vocab": 64,
           "eval_every": 10_000, "precision": "bf16", "compile": False, "lr": 3e-3}
FIXED = {"n_heads": 4, "d_ff": 256, "block_size": 128}


def _train(cfg: dict, steps: int) -> dict:
    from autotune.model.config import ModelConfig
    from autotune.train import TrainConfig, train
    params = {**TRAINER, **FIXED, **cfg, "steps": steps}
    m = ModelConfig(**{k: v for k, v in params.items() if k in ModelConfig.field_names()})
    t = TrainConfig(**{k: v for k, v in params.items() if k in TrainConfig.field_names()})
    return train(m, t)


def _worker(cfgs: list[dict], steps: int, barrier, queue) -> None:
    for cfg in cfgs:                       # warm-up: CUDA context, FlexAttention graphs, allocator
        _train(cfg, 12)
    barrier.wait()
    t0 = time.time()
    train_s = 0.0
    for cfg in cfgs:
        train_s += _train(cfg, steps)["time_s"]["train"]
    queue.put({"start": t0, "end": time.time(), "steps": steps * len(cfgs), "train_s": train_s})


def run_layout(layout: str, procs: int, steps: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    cfgs = [CONFIGS[i % len(CONFIGS)] for i in range(procs)]
    groups = [[c] for c in cfgs] if layout != "solo" else [cfgs]
    barrier, queue = ctx.Barrier(len(groups)), ctx.Queue()
    os.environ["OMP_NUM_THREADS"] = str(threads if layout != "solo" else (os.cpu_count() or 1))
    ps = [ctx.Process(target=_worker, args=(g, steps, barrier, queue)) for g in groups]
    for p in ps:
        p.start()
    rows = [queue.get(timeout=900) for _ in ps]
    for p in ps:
        p.join()
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    total = sum(r["steps"] for r in rows)
    return {"layout": layout, "procs": len(groups), "steps": total, "wall_s": round(wall, 2),
            "steps_per_s": round(total / wall, 2), "train_s": [round(r["train_s"], 2) for r in rows]}


class Mps:
    """An MPS control daemon for this run only (its own pipe and log folders), stopped on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mps_"))
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(self.dir / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(self.dir / "log")}

    def __enter__(self) -> "Mps":
        for d in self.env.values():
            os.makedirs(d, exist_ok=True)
        subprocess.run(["nvidia-cuda-mps-control", "-d"], env={**os.environ, **self.env}, check=True)
        os.environ.update(self.env)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env={**os.environ, **self.env})
        for k in self.env:
            os.environ.pop(k, None)
        time.sleep(1)
        for f in (self.dir / "log").glob("*.log"):
            print(f"--- {f.name}\n" + f.read_text()[-1500:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--layouts", nargs="+", default=["solo", "shared", "mps"], choices=["solo", "shared", "mps"])
    ap.add_argument("--more-mps", type=int, nargs="*", default=[], help="also mps with these process counts")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "mps_probe.json")
    args = ap.parse_args()
    results = []
    for layout, procs in [(l, args.procs) for l in args.layouts] + [("mps", n) for n in args.more_mps]:
        threads = max(1, (os.cpu_count() or 1) // procs)
        if layout == "mps":
            if not shutil.which("nvidia-cuda-mps-control"):
                print("mps: nvidia-cuda-mps-control not found; skipped")
                continue
            with Mps():
                results.append(run_layout(layout, procs, args.steps, threads))
        else:
            results.append(run_layout(layout, procs, args.steps, threads))
        print(results[-1], flush=True)
    base = next((r["steps_per_s"] for r in results if r["layout"] == "solo"), None)
    print(f"\n{'layout':8} {'procs':>5} {'steps':>6} {'wall s':>8} {'steps/s':>8} {'vs solo':>8}")
    for r in results:
        rel = f"{r['steps_per_s'] / base:.2f}x" if base else "-"
        print(f"{r['layout']:8} {r['procs']:>5} {r['steps']:>6} {r['wall_s']:>8} {r['steps_per_s']:>8} {rel:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"procs": args.procs, "steps": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
