"""Tokens/s of one trial run as 1 rank and as N ranks (issue 21), the same configuration and global batch.

Each row trains the built-in objective (``builtin:moe_lm``) from scratch: alone in this process, then
through ``autotune.distributed.OnRanks`` (torch's elastic agent, as ``parallel.gpus_per_trial`` /
``procs_per_trial`` run a trial). Throughput is the trainer's own: steady steps (warm-up left out)
of the last evaluation window, summed over ranks; the global batch (``batch_size`` sequences a
step) is the same, split over the ranks.

Configurations: ``cpu`` (the flat form's CPU size: the quickstart model) and ``middle`` (the
``moe_sparse`` study's middle configuration, bf16; a GPU's). On the CPU the ranks are gloo
processes; the 1-rank run takes the trainer's own thread choice (1 thread on a 1-2 core machine:
2 threads on a shared 2-core CPU made its steps 20x slower, measured), each rank a share of the cores;
on GPUs (``--backend nccl``) rank r uses GPU r of ``CUDA_VISIBLE_DEVICES``.

    python bench/distributed_scaling.py --config cpu --ranks 2 --backend gloo
    python bench/distributed_scaling.py --config middle --ranks 2 --backend nccl   # 2 GPUs

Prints a table and writes JSON (``--json``, default ``distributed_scaling.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotune.distributed import OnRanks   # noqa: E402
from autotune.scheduler.gpus import usable_cores      # noqa: E402
from autotune.knobs import CPU_DEFAULTS, GPU_DEFAULTS   # noqa: E402
from autotune.objective import moe_lm      # noqa: E402

MIDDLE_MODEL = {"n_layers": 5, "aux_loss_coef": 0.007, "keep_ratio": 0.45, "window": 128}   # model_speed's MIDDLE


def config_for(name: str, steps: int, backend: str) -> dict:
    if name == "cpu":
        base = {**CPU_DEFAULTS["trainer"], **CPU_DEFAULTS["fixed"], "device": "cpu", "compile": False}
    else:
        base = {**GPU_DEFAULTS["trainer"], **GPU_DEFAULTS["fixed"], **MIDDLE_MODEL,
                "device": "cuda" if backend == "nccl" else "cpu"}
    return {**base, "steps": steps, "eval_every": steps, "eval_batches": 1, "seed": 0}


def run(config: dict, ranks: int, backend: str, sharding: str) -> dict:
    config = {**config, "sharding": sharding}
    started = time.perf_counter()
    if ranks == 1:
        result = moe_lm(config, lambda step, metrics: True)
    else:
        result = OnRanks(moe_lm, ranks, backend)(config, lambda step, metrics: True)
    return {"ranks": ranks, "tokens_per_s": round(result["tokens_per_s"], 1),
            "step_ms": round(result["step_ms"], 2), "peak_mem_mb": round(result["peak_mem_mb"], 1),
            "val_loss": round(result["val_loss"], 4), "wall_s": round(time.perf_counter() - started, 1)}


def machine() -> str:
    gpus = ""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        gpus = "; ".join(out.stdout.splitlines())
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {usable_cores()} usable cores" + (f"; {gpus}" if gpus else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=("cpu", "middle"), default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    parser.add_argument("--sharding", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", default="distributed_scaling.json")
    args = parser.parse_args()
    config = config_for(args.config, args.steps, args.backend)
    rows = [run(config, 1, args.backend, args.sharding),
            run(config, args.ranks, args.backend, args.sharding)]
    speedup = rows[1]["tokens_per_s"] / max(rows[0]["tokens_per_s"], 1e-9)
    print(f"\n## distributed scaling: {args.config}, {args.backend}, {args.sharding}, "
          f"global batch {config['batch_size']} x {config['seq_len']} tokens, {args.steps} steps")
    header = list(rows[0])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in header) + " |")
    print(f"\n{args.ranks} ranks / 1 rank: {speedup:.2f}x tokens/s")
    out = {"config": args.config, "backend": args.backend, "sharding": args.sharding,
           "steps": args.steps, "settings": config, "rows": rows, "speedup": round(speedup, 3),
           "machine": machine(), "torch": __import__("torch").__version__,
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
