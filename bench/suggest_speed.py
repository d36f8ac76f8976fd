"""How long a sampler takes to propose a trial once a study holds many finished ones.

A study in an SQLite store (as a user's default) is filled with ``--trials`` finished trials on a
mixed space (8 floats, a log-scaled integer, a categorical: the shape of a model-search space);
then each optimizer kind proposes ``--asks`` trials one after another (``study.ask`` with the
space, ``tell`` with a value), timed from ask to ask. The first ask is the cold one (Optuna reads
every trial; a model-based sampler fits from scratch), the rest are what a long study meets at each
new trial. Prints a table and writes JSON.

    python bench/suggest_speed.py --trials 1000 --kinds evolution hybrid --out /tmp/suggest.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autotune.samplers import build_sampler  # noqa: E402

SPACE = {**{f"x{i}": FloatDistribution(-5, 5) for i in range(8)},
         "n": IntDistribution(1, 64, log=True), "c": CategoricalDistribution(["a", "b", "c"])}


def finished_trials(n: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    """``n`` finished trials spread over ``SPACE``, valued by a sphere plus the integer."""
    rng = np.random.RandomState(seed)
    trials = []
    for _ in range(n):
        params = {f"x{i}": float(rng.uniform(-5, 5)) for i in range(8)}
        params |= {"n": int(rng.randint(1, 65)), "c": str(rng.choice(["a", "b", "c"]))}
        value = sum(v ** 2 for k, v in params.items() if k.startswith("x")) + params["n"]
        trials.append(optuna.trial.create_trial(params=params, distributions=SPACE, value=value))
    return trials


def time_asks(kind: str, storage_url: str, trials: int, asks: int, seed: int = 0) -> dict:
    """A study of ``trials`` finished trials in ``storage_url``; ``asks`` timed proposals by ``kind``."""
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.create_study(storage=storage, sampler=build_sampler(kind, seed=seed),
                                study_name=f"suggest-{kind}-{trials}")
    start = time.perf_counter()
    study.add_trials(finished_trials(trials, seed))
    fill_s = time.perf_counter() - start
    times, proposals = [], []
    for _ in range(asks):
        start = time.perf_counter()
        trial = study.ask(SPACE)
        times.append(time.perf_counter() - start)
        proposals.append(trial.params)
        study.tell(trial, 0.0)
    for params in proposals:                 # every proposal lies in the space
        for name, dist in SPACE.items():
            if not dist._contains(dist.to_internal_repr(params[name])):
                raise AssertionError(f"{kind} proposed {name}={params[name]!r} outside {dist}")
    return {"kind": kind, "trials": trials, "fill_s": fill_s, "first_ask_s": times[0],
            "median_next_s": statistics.median(times[1:]) if len(times) > 1 else None,
            "max_next_s": max(times[1:]) if len(times) > 1 else None, "asks_s": times}


def table(rows: list[dict]) -> str:
    lines = ["| kind | finished trials | first ask s (cold) | median of the next | slowest of the next |",
             "|---|---|---|---|---|"]
    for r in rows:
        rest = "-" if r["median_next_s"] is None else f"{r['median_next_s']:.3f}"
        worst = "-" if r["max_next_s"] is None else f"{r['max_next_s']:.3f}"
        lines.append(f"| {r['kind']} | {r['trials']} | {r['first_ask_s']:.3f} | {rest} | {worst} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="finished trials in the study")
    parser.add_argument("--asks", type=int, default=10, help="timed proposals a kind (the first is cold)")
    parser.add_argument("--kinds", nargs="+", default=["evolution", "hybrid", "tpe"])
    parser.add_argument("--db-dir", default=None, help="where the SQLite stores go (a temporary folder)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.db_dir) as folder:
        rows = [time_asks(kind, f"sqlite:///{Path(folder) / f'{kind}.db'}", args.trials, args.asks)
                for kind in args.kinds]
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                                              "optuna": optuna.__version__, "command": sys.argv,
                                              "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
