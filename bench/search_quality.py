"""Search quality of every optimizer kind on synthetic functions with known optima.

All seven kinds of ``autotune.samplers.build_sampler`` run at equal trial budgets over several
seeds on classic functions (Branin, Hartmann-6, Levy, Rosenbrock, Ackley, Rastrigin,
Styblinski-Tang; 2 to 20 dimensions), mixed integer/categorical variants and two-objective
problems (ZDT1, a mixed ZDT2). Reported: normalized simple regret at each budget
((best - f*) / (median of random points - f*); for two objectives 1 - HV / HV*), the mean rank
of the kinds over problems x seeds, and seconds per suggestion. Prints tables, writes JSON.

    python bench/search_quality.py --seeds 3 --budgets 25,50,100 --out /tmp/sq.json   # minutes
    python bench/search_quality.py --problems branin-2,hartmann-6 --kinds hybrid,gp,tpe
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")        # one process per core; no oversubscription
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import multiprocessing as mp
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

KINDS = ("tpe", "gp", "cmaes", "random", "evolution", "nsga2", "hybrid")


# -- functions (minimized; x is a float vector) --------------------------------------------------

def branin(x):
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x):
    return float(-(_H6_ALPHA * np.exp(-(_H6_A * (np.asarray(x) - _H6_P) ** 2).sum(1))).sum())


def levy(x):
    w = 1 + (np.asarray(x) - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = ((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)).sum()
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def rosenbrock(x):
    x = np.asarray(x)
    return float((100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum())


def ackley(x):
    x = np.asarray(x)
    d = len(x)
    return float(-20 * math.exp(-0.2 * math.sqrt((x**2).sum() / d))
                 - math.exp(np.cos(2 * math.pi * x).sum() / d) + 20 + math.e)


def rastrigin(x):
    x = np.asarray(x)
    return float(10 * len(x) + (x**2 - 10 * np.cos(2 * math.pi * x)).sum())


def styblinski_tang(x):
    x = np.asarray(x)
    return float(0.5 * (x**4 - 16 * x**2 + 5 * x).sum())


def zdt(x, concave: bool):
    x = np.asarray(x)
    f1 = x[0]
    g = 1 + 9 * x[1:].mean()
    f2 = g * (1 - (f1 / g) ** 2) if concave else g * (1 - math.sqrt(f1 / g))
    return float(f1), float(f2)


# -- problems -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    """One coordinate of x: a float in [low, high], an int grid, or categorical levels."""

    kind: str                       # float | int | cat
    low: float = 0.0
    high: float = 1.0
    levels: tuple[float, ...] = ()
    scale: float = 1.0              # int: x = value * scale


@dataclass(frozen=True)
class Problem:
    name: str
    group: str                      # smooth | multimodal | high-dim | mixed | two-objective
    f: Callable[[np.ndarray], Any]
    vars: tuple[Var, ...]
    f_opt: float = 0.0              # single objective: known minimum
    hv_ref: tuple[float, ...] = ()  # two objectives: reference point
    front: Callable[[np.ndarray], np.ndarray] | None = None  # f1 -> f2 on the true front

    @property
    def n_objectives(self) -> int:
        return 2 if self.hv_ref else 1

    def suggest(self, trial) -> np.ndarray:
        x = []
        for i, v in enumerate(self.vars):
            if v.kind == "float":
                x.append(trial.suggest_float(f"x{i}", v.low, v.high))
            elif v.kind == "int":
                x.append(trial.suggest_int(f"x{i}", int(v.low), int(v.high)) * v.scale)
            else:
                x.append(trial.suggest_categorical(f"x{i}", list(v.levels)))
        return np.array(x, dtype=float)

    def random_x(self, rng: np.random.RandomState) -> np.ndarray:
        out = []
        for v in self.vars:
            if v.kind == "float":
                out.append(rng.uniform(v.low, v.high))
            elif v.kind == "int":
                out.append(rng.randint(int(v.low), int(v.high) + 1) * v.scale)
            else:
                out.append(v.levels[rng.randint(len(v.levels))])
        return np.array(out)


def _box(d: int, low: float, high: float) -> tuple[Var, ...]:
    return tuple(Var("float", low, high) for _ in range(d))


def _mixed(d: int, low: float, high: float, levels: tuple[float, ...]) -> tuple[Var, ...]:
    """A third floats, a third integers on a grid of step 1, a third categorical levels."""
    n_float, n_int = d - 2 * (d // 3), d // 3
    ints = tuple(Var("int", math.ceil(low), math.floor(high)) for _ in range(n_int))
    cats = tuple(Var("cat", levels=levels) for _ in range(d // 3))
    return _box(n_float, low, high) + ints + cats


_ST_MIN = -39.16616570377142   # per dimension, at x = -2.903534


def _zdt_hv(ref: tuple[float, float], concave: bool) -> float:
    f1 = np.linspace(0, 1, 4001)
    f2 = 1 - f1**2 if concave else 1 - np.sqrt(f1)
    return float(np.trapezoid(ref[1] - f2, f1) + (ref[0] - 1) * ref[1])


PROBLEMS: dict[str, Problem] = {p.name: p for p in [
    Problem("branin-2", "smooth", branin, (Var("float", -5, 10), Var("float", 0, 15)), 0.397887),
    Problem("hartmann-6", "smooth", hartmann6, _box(6, 0, 1), -3.32237),
    Problem("styblinski-4", "smooth", styblinski_tang, _box(4, -5, 5), 4 * _ST_MIN),
    Problem("rosenbrock-4", "smooth", rosenbrock, _box(4, -2, 2), 0.0),
    Problem("ackley-5", "multimodal", ackley, _box(5, -5, 5), 0.0),
    Problem("rastrigin-4", "multimodal", rastrigin, _box(4, -5.12, 5.12), 0.0),
    Problem("levy-6", "multimodal", levy, _box(6, -10, 10), 0.0),
    Problem("rosenbrock-10", "high-dim", rosenbrock, _box(10, -2, 2), 0.0),
    Problem("styblinski-12", "high-dim", styblinski_tang, _box(12, -5, 5), 12 * _ST_MIN),
    Problem("levy-20", "high-dim", levy, _box(20, -10, 10), 0.0),
    Problem("mixed-ackley-6", "mixed", ackley, _mixed(6, -5, 5, (-4.0, -1.0, 0.0, 2.0, 3.5)), 0.0),
    Problem("mixed-styblinski-9", "mixed", styblinski_tang,
            _mixed(9, -5, 5, (-5.0, -2.903534, 0.0, 2.5, 5.0)), 9 * _ST_MIN),
    Problem("mixed-rastrigin-6", "mixed", rastrigin, _mixed(6, -5, 5, (-3.0, -1.0, 0.0, 1.5, 4.0)), 0.0),
    Problem("zdt1-4", "two-objective", lambda x: zdt(x, False), _box(4, 0, 1),
            hv_ref=(1.1, 5.0), front=lambda f1: 1 - np.sqrt(f1)),
    Problem("mixed-zdt2-5", "two-objective", lambda x: zdt(x, True),
            _box(2, 0, 1) + (Var("int", 0, 10, scale=0.1), Var("int", 0, 4, scale=0.25),
                             Var("cat", levels=(0.0, 0.3, 0.6, 1.0))),
            hv_ref=(1.1, 5.0), front=lambda f1: 1 - f1**2),
]}


def random_median(problem: Problem, n: int = 2000) -> float:
    rng = np.random.RandomState(12345)
    return float(np.median([problem.f(problem.random_x(rng)) for _ in range(n)]))


# -- one run --------------------------------------------------------------------------------------

@dataclass
class RunResult:
    problem: str
    kind: str
    seed: int
    regret: dict[int, float] = field(default_factory=dict)
    seconds_per_suggestion: float = 0.0
    seconds_per_suggestion_last: float = 0.0   # over the last 20 suggestions


def run_one(task: tuple[str, str, int, tuple[int, ...]]) -> RunResult:
    problem_name, kind, seed, budgets = task
    import optuna
    import torch

    from autotune.samplers import build_sampler

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    problem = PROBLEMS[problem_name]
    directions = ["minimize"] * problem.n_objectives
    study = optuna.create_study(directions=directions, sampler=build_sampler(kind, seed=seed))
    result = RunResult(problem_name, kind, seed)
    times, best = [], math.inf
    normalizer = _NORMALIZERS.get(problem_name) or random_median(problem) - problem.f_opt
    values = []
    for n in range(1, max(budgets) + 1):
        start = time.perf_counter()
        trial = study.ask()
        x = problem.suggest(trial)
        times.append(time.perf_counter() - start)
        value = problem.f(x)
        study.tell(trial, value)
        if problem.n_objectives == 1:
            best = min(best, value)
        else:
            values.append(value)
        if n in budgets:
            if problem.n_objectives == 1:
                result.regret[n] = max(0.0, (best - problem.f_opt) / normalizer)
            else:
                result.regret[n] = _hv_regret(problem, np.array(values))
    result.seconds_per_suggestion = float(np.mean(times))
    result.seconds_per_suggestion_last = float(np.mean(times[-20:]))
    return result


_NORMALIZERS: dict[str, float] = {}


def _hv_regret(problem: Problem, values: np.ndarray) -> float:
    from autotune._optuna import hypervolume

    ref = np.array(problem.hv_ref)
    inside = values[(values < ref).all(axis=1)]
    hv = hypervolume(inside, ref) if len(inside) else 0.0
    hv_opt = _zdt_hv(problem.hv_ref, concave=problem.name.startswith("mixed-zdt2"))
    return max(0.0, 1.0 - hv / hv_opt)


# -- summary --------------------------------------------------------------------------------------

def summarize(results: list[RunResult], budgets: tuple[int, ...], kinds: tuple[str, ...]) -> dict:
    by_key = {(r.problem, r.kind, r.seed): r for r in results}
    problems = sorted({r.problem for r in results}, key=list(PROBLEMS).index)
    seeds = sorted({r.seed for r in results})
    median = {
        p: {k: {b: float(np.median([by_key[p, k, s].regret[b] for s in seeds if (p, k, s) in by_key]))
                for b in budgets} for k in kinds if any((p, k, s) in by_key for s in seeds)}
        for p in problems
    }
    ranks: dict[int, dict[str, list[float]]] = {b: {k: [] for k in kinds} for b in budgets}
    for b in budgets:
        for p in problems:
            for s in seeds:
                present = [k for k in kinds if (p, k, s) in by_key]
                if len(present) < 2:
                    continue
                order = _rankdata([by_key[p, k, s].regret[b] for k in present])
                # Scale ranks to 1..7 when a kind does not apply (cmaes on two objectives).
                scale = (len(kinds) - 1) / (len(present) - 1)
                for k, r in zip(present, order):
                    ranks[b][k].append(1 + (r - 1) * scale)
    mean_rank = {b: {k: float(np.mean(v)) for k, v in ranks[b].items() if v} for b in budgets}
    speed = {
        k: {"mean": float(np.mean([r.seconds_per_suggestion for r in results if r.kind == k])),
            "last20": float(np.mean([r.seconds_per_suggestion_last for r in results if r.kind == k]))}
        for k in kinds if any(r.kind == k for r in results)
    }
    return {"median_regret": median, "mean_rank": mean_rank, "seconds_per_suggestion": speed,
            "targets": _targets(median, mean_rank, speed, budgets, problems)}


def _rankdata(values: list[float]) -> list[float]:
    import scipy.stats

    return scipy.stats.rankdata(values).tolist()


def _targets(median, mean_rank, speed, budgets, problems) -> dict:
    out: dict[str, Any] = {}
    top = max(budgets)
    if top in mean_rank and "hybrid" in mean_rank[top]:
        overall = {k: float(np.mean([mean_rank[b][k] for b in budgets])) for k in mean_rank[top]}
        out["mean_rank_all_budgets"] = overall
        out["hybrid_best_mean_rank"] = min(overall, key=overall.get) == "hybrid"
    b100 = 100 if 100 in budgets else top

    def ratio(a: str, b: str, probs) -> dict[str, float]:
        eps = 1e-6   # regret floor: both at the optimum counts as a tie
        return {p: (median[p][a][b100] + eps) / (median[p][b][b100] + eps)
                for p in probs if a in median[p] and b in median[p]}

    vs_tpe = ratio("hybrid", "tpe", problems)
    if vs_tpe:
        out[f"hybrid_over_tpe_median_regret_at_{b100}"] = vs_tpe
        out["hybrid_over_tpe_geomean"] = float(np.exp(np.mean(np.log(list(vs_tpe.values())))))
    smooth = [p for p in problems if PROBLEMS[p].group == "smooth"]
    vs_gp = ratio("hybrid", "gp", smooth)
    if vs_gp:
        out[f"hybrid_over_gp_median_regret_smooth_at_{b100}"] = vs_gp
        out["hybrid_over_gp_smooth_geomean"] = float(np.exp(np.mean(np.log(list(vs_gp.values())))))
    if "gp" in speed and "hybrid" in speed:
        out["gp_over_hybrid_seconds_last20"] = speed["gp"]["last20"] / speed["hybrid"]["last20"]
    groups = sorted({PROBLEMS[p].group for p in problems})
    if all("evolution" in median[p] and "random" in median[p] for p in problems):
        out[f"evolution_beats_random_at_{top}"] = {
            g: all(median[p]["evolution"][top] <= median[p]["random"][top]
                   for p in problems if PROBLEMS[p].group == g) for g in groups}
    return out


def print_tables(summary: dict, budgets: tuple[int, ...], kinds: tuple[str, ...]) -> None:
    present = [k for k in kinds if k in summary["seconds_per_suggestion"]]
    head = "| problem | budget | " + " | ".join(present) + " |"
    print("\nMedian normalized simple regret (two objectives: 1 - HV/HV*); lower is better\n")
    print(head)
    print("|" + " --- |" * (len(present) + 2))
    for p, per_kind in summary["median_regret"].items():
        for b in budgets:
            row = [per_kind[k][b] if k in per_kind else None for k in present]
            best = min(v for v in row if v is not None)
            cells = ["-" if v is None else (f"**{v:.3g}**" if v == best else f"{v:.3g}") for v in row]
            print(f"| {p} | {b} | " + " | ".join(cells) + " |")
    print("\nMean rank (1 = best of seven) over problems x seeds\n")
    print("| budget | " + " | ".join(present) + " |")
    print("|" + " --- |" * (len(present) + 1))
    for b in budgets:
        print(f"| {b} | " + " | ".join(f"{summary['mean_rank'][b].get(k, float('nan')):.2f}" for k in present) + " |")
    print("\nSeconds per suggestion (mean over all; mean over the last 20 of each run)\n")
    print("| kind | mean s | last-20 s |")
    print("| --- | --- | --- |")
    for k in present:
        s = summary["seconds_per_suggestion"][k]
        print(f"| {k} | {s['mean']:.4f} | {s['last20']:.4f} |")
    print("\nTargets\n")
    print(json.dumps(summary["targets"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated names")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--budgets", default="25,50,100,200")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="search_quality.json")
    args = parser.parse_args()
    problems = tuple(args.problems.split(","))
    kinds = tuple(args.kinds.split(","))
    budgets = tuple(sorted(int(b) for b in args.budgets.split(",")))
    for p in problems:
        if p not in PROBLEMS:
            parser.error(f"unknown problem {p!r}; choose from {', '.join(PROBLEMS)}")
    tasks = [(p, k, s, budgets) for p in problems for k in kinds for s in range(args.seeds)
             if not (k == "cmaes" and PROBLEMS[p].n_objectives > 1)]
    # Slowest first (GP, hybrid; high dimension), so that the pool ends together.
    cost = {"gp": 10, "hybrid": 3}
    tasks.sort(key=lambda t: -cost.get(t[1], 1) * len(PROBLEMS[t[0]].vars))
    started = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = []
        for i, r in enumerate(pool.imap_unordered(run_one, tasks), 1):
            results.append(r)
            print(f"[{i}/{len(tasks)} {time.time() - started:.0f}s] {r.problem} {r.kind} seed={r.seed} "
                  f"regret@{budgets[-1]}={r.regret[budgets[-1]]:.4g} {r.seconds_per_suggestion:.3f}s/sugg",
                  flush=True)
    summary = summarize(results, budgets, kinds)
    print_tables(summary, budgets, kinds)
    meta = {"command": "python bench/search_quality.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items()),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.time() - started}
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "summary": summary,
                   "runs": [r.__dict__ for r in results]}, fh, indent=1, default=str)
    print(f"\nwrote {args.out} ({meta['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
