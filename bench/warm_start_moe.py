"""Benchmark: warm start across sequence lengths on the built-in MoE task (``moe_lm``, mqar).

One source study searches the MoE model at ``--source-seq-len`` (default 256); then, for each seed,
a cold study and one warm study per strategy (``enqueue``, ``prior``, ``local``), warm-started from
the source, search the same space at ``--target-seq-len`` (default 512). Every study runs through
``scheduler.run_study`` with ``TrialObjective`` as ``autotune run`` does, on every GPU slot
(``parallel: {gpus: auto, trials_per_gpu: --per-gpu}``); the study store is a SQLite file under
``--workdir``. Metrics per strategy over seeds, as in ``bench/warm_start.py``:
- ``reach``: trials (in trial-number order) the warm study needs to reach the best val_loss the
  cold study of the same seed reached in ``--trials`` (``>N``: never); median and share reached;
- ``best@N``: median best val_loss, and the paired warm - cold difference with a bootstrap 95%
  interval (few seeds: a wide interval).
``--budget-s`` caps the whole run: each study gets a timeout, its share of the time left (a study
cut short says so in the ``trials`` column).

  python bench/warm_start_moe.py --out out/warm_start_moe.json               # GPU (about 7 min)
  python bench/warm_start_moe.py --tiny --out /tmp/warm_start_moe_tiny.json  # CPU check (minutes)
Prints a table; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from autotune import store
from autotune import study as study_mod
from autotune.scheduler.gpus import detect_gpus
from autotune.spec import parse_spec
from warm_start import (COMPARISON_HEAD, bootstrap_median_ci, comparison_cells,  # bench/: this folder
                        trials_to_reach)

STRATEGIES = ("cold", "enqueue", "prior", "local")

# A small search over what matters to an MoE language model; dense attention (the sparse
# flex-attention backward failed to compile on the device's torch 2.11 for small shapes).
SPACE = {"lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
         "top_k": {"type": "int", "low": 1, "high": 2},
         "num_experts": {"type": "categorical", "choices": [4, 8]},
         "d_model": {"type": "categorical", "choices": [64, 128]},
         "d_ff": {"type": "categorical", "choices": [128, 256, 512]}}
FIXED = {"n_layers": 2, "n_heads": 4, "attention": "dense"}
# At 1,000 steps this task has a phase change: a trial stays on the plateau (val_loss 1.7-3.4
# against chance ln 32 = 3.47) or solves the recall (< 0.05); at 300 steps every trial is on the
# plateau and there is nothing to transfer (device runs of 2026-12-02, bench/RESULTS.md). The first
# GPU run used 48 pairs in a 256-token vocabulary at batch 32: every trial stayed at chance.
TASK = {"task": "mqar", "num_pairs": 16, "task_vocab": 64, "batch_size": 64}

TINY_SPACE = {"lr": SPACE["lr"], "top_k": SPACE["top_k"],
              "num_experts": {"type": "categorical", "choices": [2, 4]},
              "d_model": {"type": "categorical", "choices": [16, 32]},
              "d_ff": {"type": "categorical", "choices": [32, 64]}}
TINY_TASK = {"task": "mqar", "num_pairs": 4, "task_vocab": 32, "batch_size": 8}


def study_raw(args: argparse.Namespace, name: str, seq_len: int, seed: int, trials: int,
              timeout_s: float, strategy: str | None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "study": name, "storage": f"sqlite:///{args.workdir / 'warm_start_moe.db'}",
        "space": TINY_SPACE if args.tiny else SPACE,
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "optimizer": {"kind": "tpe", "seed": seed}, "pruner": "none",
        "budget": {"trials": trials, "timeout": f"{max(1, int(timeout_s))}s"},
        "parallel": {"gpus": "auto", "trials_per_gpu": args.per_gpu,
                     **({"workers": args.cpu_workers} if args.tiny else {})},
        "trainer": {**(TINY_TASK if args.tiny else TASK), "seq_len": seq_len, "steps": args.steps,
                    "eval_every": args.steps, "eval_batches": 2, "precision": "bf16",
                    "compile": False},
        "fixed": FIXED,
    }
    if strategy is not None and strategy != "cold":
        raw["warm_start"] = {"from": [args.source_name], "strategy": strategy}
    return raw


def run_one(raw: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One study, as ``autotune run`` runs it; its trials' values in trial-number order."""
    spec = parse_spec(raw, base_dir=workdir, default_name=raw["study"])
    storage = store.open_storage(spec.storage)
    study = study_mod.prepare(spec)            # warm start applied as `autotune run` applies it
    result = study_mod.run(spec, study)
    trials = [t for t in optuna.load_study(study_name=spec.study, storage=storage).get_trials(
        deepcopy=False) if t.state.is_finished()]     # not an enqueued trial left WAITING
    values = [t.value if t.value is not None and math.isfinite(t.value) else math.inf for t in trials]
    return {"study": spec.study, "values": values, "states": [t.state.name for t in trials],
            "params": [t.params for t in trials], "wall_s": round(result.wall_s, 1),
            "stopped_by": result.stopped_by, "slots": result.slots,
            "fail_reasons": sorted({t.user_attrs["fail_reason"][:200] for t in trials
                                    if "fail_reason" in t.user_attrs})}


def summarize(runs: list[dict[str, Any]], n_trials: int) -> list[dict[str, Any]]:
    rows = []
    cold = {r["seed"]: r for r in runs if r["strategy"] == "cold"}
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == strategy and r["seed"] in cold
                and np.isfinite(min(r["values"], default=math.inf))
                and np.isfinite(min(cold[r["seed"]]["values"], default=math.inf))]
        if not mine:
            continue
        best = np.array([min(r["values"]) for r in mine])
        row = {"strategy": strategy, "seeds": len(mine), "median_best": float(np.median(best)),
               "median_trials": float(np.median([len(r["values"]) for r in mine]))}
        if strategy != "cold":
            targets = [min(cold[r["seed"]]["values"]) for r in mine]
            reach = [trials_to_reach(r["values"], t) for r, t in zip(mine, targets)]
            diff = best - np.array(targets)
            lo, hi = bootstrap_median_ci(diff)
            row.update({"median_reach": float(np.median([n_trials + 1 if x is None else x
                                                         for x in reach])),
                        "reached": sum(x is not None for x in reach) / len(reach),
                        "median_diff": float(np.median(diff)), "diff_ci95": [lo, hi],
                        "worse_beyond_noise": lo > 0})
        rows.append(row)
    return rows


def chance_loss(task: dict[str, Any]) -> float:
    """Validation loss of a model that has learnt nothing: uniform over the task's value tokens."""
    vocab = task["task_vocab"]
    return math.log(vocab - 1 - (vocab - 1) // 2)


def print_table(rows: list[dict[str, Any]], n_trials: int, source: dict[str, Any],
                chance: float) -> None:
    best = min(source["values"])
    print(f"\nsource {source['study']}: {len(source['values'])} trials, best val_loss "
          f"{best:.4g} (chance: {chance:.4g})")
    if best > 0.98 * chance:
        print("WARNING: the source's best is at chance level: the task was not learnt at this size "
              "and step count, so the comparison below measures noise")
    head = (f"{'strategy':8} {'seeds':>5} {'trials':>6} {'median best@' + str(n_trials):>16} "
            + COMPARISON_HEAD)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['strategy']:8} {r['seeds']:>5} {r['median_trials']:>6g} "
              f"{r['median_best']:>16.4g} {comparison_cells(r, n_trials)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--trials", type=int, default=8,
                    help="trials of each target study (default: two waves of 4 per GPU)")
    ap.add_argument("--source-trials", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000, help="training steps of each trial")
    ap.add_argument("--source-seq-len", type=int, default=256)
    ap.add_argument("--target-seq-len", type=int, default=512)
    ap.add_argument("--per-gpu", type=int, default=8, help="trials sharing each GPU")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES[1:]),
                    choices=list(STRATEGIES[1:]), help="warm strategies (cold always runs)")
    ap.add_argument("--budget-s", type=float, default=440,
                    help="wall-time cap of the whole run; each study gets its share as a timeout")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/warm_start_moe"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tiny", action="store_true",
                    help="tiny model, batches and counts: a CPU check of this script")
    ap.add_argument("--cpu-workers", type=int, default=2, help="--tiny: concurrent CPU trials")
    args = ap.parse_args(argv)
    if args.tiny:
        for name, value in (("seeds", 2), ("trials", 4), ("source_trials", 6), ("steps", 20),
                            ("source_seq_len", 32), ("target_seq_len", 64)):
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, value)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("autotune").setLevel(logging.ERROR)     # "parameters new here", per study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "warm_start_moe.db").unlink(missing_ok=True)
    args.source_name = f"moe-seq{args.source_seq_len}"
    strategies = ["cold", *args.strategies]
    started = time.time()
    plan = [("source", None, args.source_trials)] + [
        (s, seed, args.trials) for seed in range(args.seeds) for s in strategies]
    left_trials = sum(n for _, _, n in plan)
    source, runs = None, []
    for strategy, seed, n in plan:
        left_s = args.budget_s - (time.time() - started)
        timeout = max(1.0, left_s * n / left_trials)
        left_trials -= n
        if strategy == "source":
            raw = study_raw(args, args.source_name, args.source_seq_len, 1_000, n, timeout, None)
        else:
            raw = study_raw(args, f"moe-seq{args.target_seq_len}-{strategy}-s{seed}",
                            args.target_seq_len, seed, n, timeout, strategy)
        out = run_one(raw, args.workdir)
        print(f"{out['study']}: {len(out['values'])} trials in {out['wall_s']} s "
              f"(stopped by {out['stopped_by']}), best {min(out['values'], default=math.inf):.4g}"
              + (f"; failures: {out['fail_reasons']}" if out["fail_reasons"] else ""), flush=True)
        if strategy == "source":
            source = out
        else:
            runs.append({"strategy": strategy, "seed": seed, **out})
    rows = summarize(runs, args.trials)
    print_table(rows, args.trials, source, chance_loss(TINY_TASK if args.tiny else TASK))
    elapsed = time.time() - started
    print(f"\n{1 + len(runs)} studies in {elapsed:.0f} s")
    if args.out:
        meta = {"command": " ".join(["python"] + sys.argv), "machine": platform.platform(),
                "gpus": detect_gpus(), "optuna": optuna.__version__,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "args": {k: str(v) for k, v in vars(args).items()}, "elapsed_s": round(elapsed, 1)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "summary": rows, "source": source,
                                        "runs": runs}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
