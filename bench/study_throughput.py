"""How much of the GPU-time of a study goes into training steps, and what Hyperband saves.

Runs real studies of short MoE trials through ``scheduler.run_study`` (the same path as
``autotune run``) on every GPU found, then reads the trials back from the store.

  throughput: for each ``--per-gpu K`` a study of ``K * gpus * --trials-per-slot`` fixed-size trials
              (only ``lr`` varies): wall time, the share of the slots' wall time spent in training
              steps (the busy fraction) and where the rest went (setup, warm-up/compilation,
              evaluation, reporting, the final latency measurement, the worker, between trials),
              nvidia-smi's utilization, aggregate training tokens/s.
  hyperband:  per seed, a ``--trials``-trial TPE study without pruning, then a Hyperband (and with
              ``--pruners hyperband sha`` an asynchronous successive halving) study of the same
              sampler seed given a third of its GPU-seconds: best validation loss, and the
              GPU-seconds until it first came within 1% of the unpruned best.

  python bench/study_throughput.py --mode throughput --per-gpu 1 2 4 --out out/study.json
  python bench/study_throughput.py --mode hyperband --trials 40 --seeds 3 --out out/hyperband.json
  python bench/study_throughput.py --mode hyperband --task text ...   # byte-level LM on stdlib sources
  python bench/study_throughput.py --tiny ...     # a CPU smoke test of this script
Prints a table; writes JSON. Storage: a fresh SQLite file under --workdir.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sysconfig
import threading
import time
from pathlib import Path

import optuna

from autotune import scheduler, store
from autotune import study as study_mod
from autotune.scheduler.gpus import detect_gpus
from autotune.spec import parse_spec
from autotune.train import TIMING_SKIP_STEPS

# Dense attention: the sparse flex-attention backward failed to compile on the device's torch 2.11
# for these shapes (NoValidChoicesError, 2026-11-23); the MoE layers are what these trials exercise.
MODEL = {"d_model": 128, "n_layers": 2, "n_heads": 4, "d_ff": 256, "num_experts": 8, "top_k": 2,
         "attention": "dense", "window": 64, "block_size": 32}


SIZES = {"seq_len": 256, "num_pairs": 16, "batch_size": 64}
TINY = {"seq_len": 32, "num_pairs": 4, "batch_size": 4}      # --tiny: a CPU smoke test of this script


TEXT: dict = {}   # --task text: {"task": "text", "data_path": ...}, set by main()


def trainer(steps: int, eval_every: int, compile_: bool) -> dict:
    task = ({**TEXT, "seq_len": SIZES["seq_len"], "batch_size": SIZES["batch_size"]} if TEXT
            else {"task": "mqar", **SIZES})
    return {**task, "steps": steps, "eval_every": eval_every,
            "eval_batches": 8 if TEXT else 2, "precision": "bf16", "compile": compile_}


def stdlib_corpus(path: Path, limit_bytes: int) -> Path:
    """A byte-level text corpus any machine has: this Python's standard library sources, in sorted
    file order, up to ``limit_bytes`` (one stream; the tail is the validation set). Language
    modelling on it gives smoothly falling loss curves, unlike mqar's plateau and phase change."""
    if path.exists() and path.stat().st_size > 0:
        return path
    root = Path(sysconfig.get_paths()["stdlib"])
    written = 0
    with path.open("wb") as out:
        for src in sorted(root.rglob("*.py")):
            if "site-packages" in src.parts or "test" in src.parts or "tests" in src.parts:
                continue
            data = src.read_bytes()
            out.write(data[: limit_bytes - written])
            written = min(limit_bytes, written + len(data))
            if written >= limit_bytes:
                break
    return path


class GpuSampler(threading.Thread):
    """nvidia-smi's utilization.gpu (% of time a kernel ran) every 200 ms, all GPUs averaged."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                values = [float(v) for v in out.split()]
                if values:
                    self.samples.append(statistics.fmean(values))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return


def parse(raw: dict, workdir: Path):
    return parse_spec(raw, base_dir=workdir, default_name=raw["study"])


def run_one(raw: dict, workdir: Path) -> tuple[optuna.Study, scheduler.RunResult, float | None]:
    spec = parse(raw, workdir)
    storage = store.open_storage(spec.storage)
    study = study_mod.prepare(spec)            # as `autotune run` assembles it, optimizer options included
    sampler = GpuSampler()
    sampler.start()
    result = study_mod.run(spec, study)
    sampler.stop.set()
    util = statistics.fmean(sampler.samples) if sampler.samples else None
    return optuna.load_study(study_name=spec.study, storage=storage), result, util


PHASES = ("setup", "compile", "eval", "latency", "report")   # parts of a trial's time_s besides train


def trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get("metrics", {})
        parts = t.user_attrs.get("time_s") or {}
        steady = max(0.0, m.get("steps", 0.0) - TIMING_SKIP_STEPS)
        step_s = parts.get("train", m.get("step_ms", 0.0) * steady / 1e3)   # training steps
        rows.append({"number": t.number, "state": t.state.name, "gpu": t.user_attrs.get("gpu"),
                     "slot": t.user_attrs.get("slot"),
                     "start": t.datetime_start.timestamp() if t.datetime_start else None,
                     "slot_s": t.user_attrs.get("slot_seconds", t.user_attrs.get("gpu_seconds", 0.0)),
                     "gpu_s": t.user_attrs.get("gpu_seconds", 0.0), "step_s": step_s,
                     "train_s": m.get("train_s", 0.0), "tokens": m.get("tokens_per_s", 0.0) * step_s,
                     **{p: parts.get(p, 0.0) for p in PHASES},
                     "val_loss": m.get("val_loss"), "steps": m.get("steps"),
                     "done": t.datetime_complete.timestamp() if t.datetime_complete else None,
                     "fail_reason": t.user_attrs.get("fail_reason")})
    return rows


def slot_time_split(rows: list[dict], slot_wall_s: float) -> dict[str, float]:
    """Where the slots' wall time went, as shares of ``slots x study wall``: training steps, and
    the rest by phase. ``worker``: a trial's time in its worker outside ``train`` (opening the
    store, imports and CUDA start in a fresh worker, the final metrics write, freeing memory);
    ``between``: slots without a trial (worker start-up, the scheduler's tell / claim / ask)."""
    total = {k: sum(r[k] for r in rows) for k in ("step_s", "slot_s", "train_s", *PHASES)}
    split = {"steps": total["step_s"], **{p: total[p] for p in PHASES},
             "worker": total["slot_s"] - total["train_s"], "between": slot_wall_s - total["slot_s"]}
    return {k: round(v / slot_wall_s, 4) for k, v in split.items()}


def steady_state(rows: list[dict]) -> dict[str, float | None]:
    """The trials after each slot's first (whose start pays the worker's imports and CUDA start):
    their overhead per trial (slot time outside training steps, plus the gap since the slot's
    previous trial ended) and their busy fraction, which is what a long study tends to."""
    later, gaps = [], []
    for slot in {r["slot"] for r in rows}:
        mine = sorted((r for r in rows if r["slot"] == slot and r["start"]), key=lambda r: r["start"])
        for prev, r in zip(mine, mine[1:]):
            later.append(r)
            gaps.append(max(0.0, r["start"] - prev["done"]) if prev["done"] else 0.0)
    if not later:
        return {"steady_overhead_s": None, "steady_busy": None}
    step_s = sum(r["step_s"] for r in later)
    held = sum(r["slot_s"] for r in later) + sum(gaps)
    return {"steady_overhead_s": round((held - step_s) / len(later), 3),
            "steady_busy": round(step_s / held, 3),
            "steady_split_s": {p: round(statistics.fmean(r[p] for r in later), 3) for p in PHASES}
            | {"worker": round(statistics.fmean(r["slot_s"] - r["train_s"] for r in later), 3),
               "gap": round(statistics.fmean(gaps), 3)}}


def fresh_stores(workdir: Path) -> None:
    """Remove the study stores an earlier run left in ``workdir`` (a study of the same name would
    otherwise count its old trials against the budget and report them: a run with other --steps
    once printed the previous run's figures). The corpus and the compile caches stay."""
    for name in ("throughput.db", "hyperband.db"):
        for suffix in ("", "-journal", "-wal", "-shm"):
            (workdir / f"{name}{suffix}").unlink(missing_ok=True)


def throughput(args: argparse.Namespace, n_gpus: int) -> list[dict]:
    out = []
    for k in args.per_gpu:
        n_trials = k * max(1, n_gpus) * args.trials_per_slot
        raw = {"study": f"throughput-k{k}-{'compiled' if args.compile else 'eager'}",
               "storage": f"sqlite:///{args.workdir}/throughput.db",
               "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}},
               "objectives": [{"metric": "val_loss", "direction": "minimize"}],
               "optimizer": {"kind": "random", "seed": 0}, "pruner": "none",
               "budget": {"trials": n_trials, "timeout": f"{args.study_timeout}s"},
               "parallel": {"gpus": "auto", "trials_per_gpu": k} if n_gpus else {"workers": k},
               "trainer": trainer(args.steps, args.eval_every, args.compile), "fixed": MODEL}
        study, result, util = run_one(raw, args.workdir)
        rows = trial_rows(study)
        step_s = sum(r["step_s"] for r in rows)
        slot_s = sum(r["slot_s"] for r in rows)
        slot_wall = result.slots * result.wall_s
        out.append({
            "trials_per_gpu": k, "gpus": n_gpus, "slots": result.slots, "trials": len(rows),
            "compile": args.compile, "steps": args.steps,
            "failed": sum(r["state"] == "FAIL" for r in rows), "wall_s": result.wall_s,
            # share of the slots' wall time (worker start-up included) spent in training steps
            "busy_of_slot_wall": round(step_s / slot_wall, 3),
            # share of the time trials held their slot spent in training steps
            "busy_of_trial_time": round(step_s / slot_s, 3) if slot_s else None,
            "overhead_s_per_trial": round((slot_wall - step_s) / max(1, len(rows)), 2),
            "nvidia_smi_util_pct": round(util, 1) if util is not None else None,
            "tokens_per_s": round(sum(r["tokens"] for r in rows) / result.wall_s),
            "tokens_per_s_per_trial": round(statistics.fmean(
                r["tokens"] / r["step_s"] for r in rows if r["step_s"])) if step_s else None,
            "split": slot_time_split(rows, slot_wall),
            # parts of "between" (and of "worker": suggest runs while the trial holds its slot)
            "scheduler": {k: round(getattr(result, k) / slot_wall, 4)
                          for k in ("startup_s", "handout_s", "record_s")},
            **steady_state(rows),
            "fail_reasons": sorted({r["fail_reason"] for r in rows if r["fail_reason"]}),
            "trial_rows": rows,
        })
        print(json.dumps({k: v for k, v in out[-1].items() if k != "trial_rows"}), flush=True)
    return out


HB_SPACE = {"lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
            "top_k": {"type": "int", "low": 1, "high": 2},
            "num_experts": {"type": "categorical", "choices": [4, 8]},
            "aux_loss_coef": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            "d_ff": {"type": "categorical", "choices": [128, 256]}}


def pruning_study(args: argparse.Namespace, seed: int, pruner: str, budget: dict) -> dict:
    """One TPE study of ``HB_SPACE`` (seed ``seed``), trials in order of completion."""
    fixed = {k: v for k, v in MODEL.items() if k not in HB_SPACE}
    rung = max(1, args.steps // 9)            # Hyperband rungs at steps/9, steps/3, steps
    raw = {"study": f"hb-{args.task}-{pruner}-s{seed}", "storage": f"sqlite:///{args.workdir}/hyperband.db",
           "space": HB_SPACE, "objectives": [{"metric": "val_loss", "direction": "minimize"}],
           "optimizer": {"kind": "tpe", "seed": seed},
           "pruner": "none" if pruner == "none" else
           {"kind": pruner, "min_steps": rung, "reduction_factor": 3},
           "budget": {**budget, "timeout": f"{args.study_timeout}s"},
           "parallel": {"gpus": "auto", "trials_per_gpu": args.hb_per_gpu},
           "trainer": trainer(args.steps, rung, args.compile), "fixed": fixed}
    study, result, _ = run_one(raw, args.workdir)
    rows = sorted((r for r in trial_rows(study) if r["done"]), key=lambda r: r["done"])
    return {"rows": rows, "wall_s": result.wall_s}


def gpu_s_until(rows: list[dict], target: float) -> float | None:
    """GPU-seconds spent, in order of completion, until a COMPLETE trial first reached ``target``."""
    spent = 0.0
    for r in rows:
        spent += r["gpu_s"]
        if r["state"] == "COMPLETE" and r["val_loss"] is not None and r["val_loss"] <= target:
            return spent
    return None


def best_within(rows: list[dict], gpu_s: float) -> float | None:
    """The best COMPLETE val_loss among the trials finished, in order of completion, within
    ``gpu_s`` GPU-seconds: what a study would have had with that budget."""
    spent, best = 0.0, None
    for r in rows:
        spent += r["gpu_s"]
        if spent > gpu_s:
            break
        if r["state"] == "COMPLETE" and r["val_loss"] is not None:
            best = r["val_loss"] if best is None else min(best, r["val_loss"])
    return best


def hyperband(args: argparse.Namespace, n_gpus: int) -> list[dict]:
    """Per seed: a ``--trials``-trial study without pruning, then for each of ``--pruners`` a study
    given a third of the unpruned study's GPU-seconds (``budget.gpu_hours``; at most ``--hb-trials``
    trials). Target (issue 5): Hyperband's best within 1% of the unpruned best, in at most a third
    of the unpruned study's GPU-seconds."""
    out = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        none = pruning_study(args, seed, "none", {"trials": args.trials})
        complete = [r for r in none["rows"] if r["state"] == "COMPLETE"]
        best = min(r["val_loss"] for r in complete)
        total = sum(r["gpu_s"] for r in none["rows"])
        none_reach = gpu_s_until(none["rows"], best * 1.01)   # the control: the unpruned study itself
        for pruner in args.pruners:
            hb = pruning_study(args, seed, pruner,
                               {"trials": args.hb_trials, "gpu_hours": total / 3 / 3600})
            hb_complete = [r for r in hb["rows"] if r["state"] == "COMPLETE"]
            hb_best = min((r["val_loss"] for r in hb_complete), default=float("nan"))
            reach = gpu_s_until(hb["rows"], best * 1.01)
            hb_gpu_s = sum(r["gpu_s"] for r in hb["rows"])
            none_same = best_within(none["rows"], hb_gpu_s)
            out.append({
                "seed": seed, "pruner": pruner, "trials_none": len(none["rows"]),
                "best_none": round(best, 4), "gpu_s_none": round(total, 1),
                "gpu_s_none_to_its_best": round(gpu_s_until(none["rows"], best), 1),
                "trials": len(hb["rows"]), "pruned": sum(r["state"] == "PRUNED" for r in hb["rows"]),
                "best": round(hb_best, 4), "vs_none": round(hb_best / best - 1, 4),
                "gpu_s": round(hb_gpu_s, 1),
                "gpu_s_to_within_1pct": round(reach, 1) if reach is not None else None,
                "none_gpu_s_to_within_1pct": round(none_reach, 1) if none_reach is not None else None,
                "none_best_in_same_gpu_s": round(none_same, 4) if none_same is not None else None,
                "target_met": reach is not None and reach <= total / 3,
                "wall_s": round(none["wall_s"] + hb["wall_s"], 1),
                "trial_rows": {"none": none["rows"], pruner: hb["rows"]}})
            print(json.dumps({k: v for k, v in out[-1].items() if k != "trial_rows"}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["throughput", "hyperband"], default="throughput")
    ap.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--trials-per-slot", type=int, default=6)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100, help="steps between evaluations (throughput)")
    ap.add_argument("--trials", type=int, default=40, help="hyperband mode: trials of the unpruned study")
    ap.add_argument("--hb-trials", type=int, default=120, help="hyperband mode: most trials of the pruned study")
    ap.add_argument("--seeds", type=int, default=1, help="hyperband mode: studies of each kind")
    ap.add_argument("--first-seed", type=int, default=0, help="hyperband mode: the first sampler seed")
    ap.add_argument("--pruners", nargs="+", default=["hyperband"], choices=["hyperband", "sha"],
                    help="hyperband mode: the pruners compared with no pruning")
    ap.add_argument("--hb-per-gpu", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile each trial's model")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/study_throughput"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--study-timeout", type=int, default=3600,
                    help="seconds: each study stops handing out trials after this")
    ap.add_argument("--task", choices=["mqar", "text"], default="mqar",
                    help="mqar (built-in recall task) or text: byte-level language modelling")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="--task text: a .txt/.bin token file (default: this Python's stdlib sources)")
    ap.add_argument("--corpus-mb", type=float, default=16, help="size of the default corpus")
    ap.add_argument("--tiny", action="store_true", help="tiny model and batches (CPU smoke test)")
    args = ap.parse_args()
    if args.tiny:
        SIZES.update(TINY)
        MODEL.update(d_model=32, d_ff=64, window=16, block_size=8)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    fresh_stores(args.workdir)
    if args.task == "text":
        corpus = args.corpus or stdlib_corpus(args.workdir / f"stdlib_corpus_{args.corpus_mb:g}MiB.txt",
                                              int(args.corpus_mb * 2**20))
        TEXT.update(task="text", data_path=str(corpus.resolve()))
    gpus = detect_gpus()
    started = time.time()
    rows = throughput(args, len(gpus)) if args.mode == "throughput" else hyperband(args, len(gpus))
    report = {"mode": args.mode, "gpus": gpus, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows, "seconds": round(time.time() - started, 1)}
    keys = [k for k in rows[0] if k != "trial_rows"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
