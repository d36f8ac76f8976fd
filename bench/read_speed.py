"""How long the read-only commands take, as a user runs them, on studies of 5,000 trials.

Times ``autotune status``, ``status STUDY``, ``best``, ``export`` (CSV to a file) and ``report``
(HTML) as whole commands: ``python -m autotune ...`` in a subprocess, wall time from start to
exit (interpreter start and imports included), median of ``--repeat`` runs. With ``--before DIR``
(a checkout of an older commit, e.g. ``git worktree add`` or ``git archive | tar -x``) the same
commands run from that checkout too, in the same session, and the table says whether each
command's output (stdout, or the written file for ``export``) is byte-identical in both.
The store is the one ``bench/report_speed.py`` builds (it is built here if missing).
Prints a table and writes JSON.

    python bench/read_speed.py --db /tmp/autotune_report_bench.db --before /tmp/autotune-before
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_store(db: Path, trials: int) -> list[str]:
    """The studies ``bench/report_speed.py`` builds: 1 and 2 objectives of ``trials`` each."""
    names = [f"bench{k}-{trials}" for k in (1, 2)]
    code = ("import sys; sys.path.insert(0, 'tests/report_tests'); import optuna, warnings; "
            "warnings.simplefilter('ignore'); optuna.logging.set_verbosity(optuna.logging.WARNING); "
            "from synthetic import build_study; from autotune import store; "
            "s = store.open_storage(sys.argv[1]); n = int(sys.argv[2]); "
            "[build_study(s, f'bench{k}-{n}', n, objectives=k, seed=k) for k in (1, 2) "
            "if not store.study_exists(s, f'bench{k}-{n}')]")
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}", str(trials)], cwd=ROOT, check=True)
    return names


def commands(url: str, names: list[str], out: Path) -> dict[str, list[str]]:
    cmds = {"status": ["status", "--storage", url]}
    for name in names:
        cmds[f"status {name}"] = ["status", name, "--storage", url]
        cmds[f"best {name}"] = ["best", name, "--storage", url]
        cmds[f"export {name}"] = ["export", name, "--storage", url, "--out", str(out / f"{name}.csv"),
                                  "--force"]
        cmds[f"report {name}"] = ["report", name, "--storage", url, "--out", str(out / f"{name}.html"),
                                  "--force"]
    return cmds


def time_command(checkout: Path, args: list[str], repeat: int) -> tuple[float, list[float], str]:
    """Median wall seconds of ``python -m autotune ARGS`` run from ``checkout`` (so that its
    ``autotune`` is the one imported), all the times, and a digest of what it wrote."""
    times, digest = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "autotune", *args], cwd=checkout,
                              capture_output=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{args} in {checkout} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        written = Path(args[args.index("--out") + 1]) if args[0] == "export" else None
        digest = hashlib.sha256(written.read_bytes() if written else done.stdout).hexdigest()[:12]
    return statistics.median(times), [round(t, 2) for t in times], digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/autotune_report_bench.db"))
    ap.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--studies", type=int, nargs="+", default=[1, 2], help="objectives: 1, 2 or both")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "read_speed")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ensure_store(args.db, args.trials) if int(n[5]) in args.studies]
    versions = {"after": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cmd in commands(f"sqlite:///{args.db}", names, Path(tmp)).items():
            row = {"command": f"autotune {label}"}
            for version, checkout in versions.items():
                median, times, digest = time_command(checkout, cmd, args.repeat)
                row.update({f"{version}_s": round(median, 2), f"{version}_runs_s": times,
                            f"{version}_output": digest})
            if "before" in versions:
                row["same_output"] = row["before_output"] == row["after_output"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1-min load average "
                         f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end",
              "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "trials": args.trials,
              "command": " ".join(["python", *sys.argv]), "repeat": args.repeat,
              "versions": {k: str(v) for k, v in versions.items()}, "rows": rows}
    (args.out / "read_speed.json").write_text(json.dumps(result, indent=2))
    cols = [c for c in ("before_s", "after_s", "same_output") if c in rows[0]]
    print(f"\n{'command (median of %d, wall s)' % args.repeat:44s} " + " ".join(f"{c:>12s}" for c in cols))
    for row in rows:
        print(f"{row['command']:44s} " + " ".join(f"{str(row[c]):>12s}" for c in cols))
    print(f"{result['machine']}\nwrote {args.out / 'read_speed.json'}")


if __name__ == "__main__":
    main()
