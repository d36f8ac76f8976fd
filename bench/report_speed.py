"""How fast the report renders and the dashboard answers for a study of 5,000 trials.

Builds synthetic single- and two-objective studies (the params, curves and user attrs autotune trials
store; 70 % complete, 20 % pruned, 10 % failed) in a SQLite store opened the way autotune opens it,
then times:
  - ``report.write_report`` (load the study from the store + build every figure + write the page),
  - the dashboard's study API, ``GET /api/studies/ID`` (what its study page fetches; cold = the first
    request after start, warm = the next), and ``/api/studies/ID/param_importances``; and the slowest
    write of a worker-like writer while that cold read runs,
  - with chromium installed: the report page drawing every figure, and the dashboard study page
    rendering its first charts, in headless Chromium (load to ready).
Prints a table and writes JSON.

    python bench/report_speed.py --trials 5000 --db /tmp/report_bench.db   # the store is reused
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import socket
import subprocess
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "report_tests"))
from browser import Browser, find_chromium  # noqa: E402
from synthetic import build_study  # noqa: E402

from autotune import report, store  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def ensure_study(storage, name: str, n: int, objectives: int) -> float:
    """Build the study unless the store has it already; returns the seconds building took (0: reused)."""
    if store.study_exists(storage, name):
        return 0.0
    seconds, _ = timed(lambda: build_study(storage, name, n, objectives=objectives, seed=objectives))
    return seconds


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as r:
        return r.read()


def bench_report(url: str, name: str, out_dir: Path) -> tuple[dict, Path]:
    row: dict = {}
    row["report_s"], page = timed(lambda: report.write_report(
        optuna.load_study(study_name=name, storage=url), out_dir / f"{name}.html"), repeat=3)
    row["report_mb"] = round(page.stat().st_size / 1e6, 2)
    return row, page


def bench_api(base: str, sid: int, url: str, name: str) -> dict:
    """The study API; while its cold read runs, a worker-like writer sets a user attr every 0.2 s:
    the slowest of those writes is how long the dashboard can stall a running study."""
    row: dict = {}
    writes: list[float] = []
    reading = threading.Event()
    study = optuna.load_study(study_name=name, storage=store.open_storage(url))

    def write_while_reading() -> None:
        i = 0
        while not reading.is_set():
            i += 1
            t0 = time.perf_counter()
            study.set_user_attr("bench_probe", i)
            writes.append(time.perf_counter() - t0)
            time.sleep(0.2)

    writer = threading.Thread(target=write_while_reading)
    writer.start()
    try:
        row["api_study_cold_s"], body = timed(lambda: fetch(f"{base}/api/studies/{sid}"))
    finally:
        reading.set()
        writer.join()
    row["worker_write_max_s_during_read"] = max(writes)
    row["api_study_warm_s"], body = timed(lambda: fetch(f"{base}/api/studies/{sid}"), repeat=3)
    row["api_study_mb"] = round(len(body) / 1e6, 2)
    row["api_importances_s"], _ = timed(lambda: fetch(f"{base}/api/studies/{sid}/param_importances"))
    return row


def bench_browser(browser: Browser, page: Path, dashboard_url: str, sid: int, objectives: int) -> dict:
    row: dict = {}
    drawn = ("document.querySelectorAll('div.fig').length > 0 && "
             "document.querySelectorAll('div.fig.js-plotly-plot').length === "
             "document.querySelectorAll('div.fig').length")
    row["browser_report_all_figures_s"], _ = timed(
        lambda: browser.open(page.as_uri() + "?all", ready=drawn, settle_s=0))
    row["browser_report_first_view_s"], _ = timed(
        lambda: browser.open(page.as_uri(), ready="document.querySelector('#plot-history.js-plotly-plot')",
                             settle_s=0))
    ready = "Pareto Front" if objectives > 1 else "Hyperparameter Importance"
    row["browser_dashboard_study_page_s"], _ = timed(lambda: browser.open(
        f"{dashboard_url}studies/{sid}", ready=f"document.body.innerText.includes({ready!r})", settle_s=0))
    row["browser_errors"] = list(browser.errors)
    browser.errors.clear()
    return row


def start_dashboard(url: str) -> tuple[subprocess.Popen, str]:
    """``autotune dashboard`` runs in its own process; so does it here (no GIL shared with the bench)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from autotune import dashboard; "
                             "dashboard.serve(sys.argv[1], port=int(sys.argv[2]))", url, str(port)],
                            stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            fetch(f"{base}/api/meta")
            return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the dashboard did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/autotune_report_bench.db"))
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "report_speed")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]    # a shared machine: say how busy it was
    args.out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{args.db}"
    storage = store.open_storage(url)
    build = {f"bench{k}-{args.trials}": ensure_study(storage, f"bench{k}-{args.trials}", args.trials, k)
             for k in (1, 2)}
    names = {k: f"bench{k}-{args.trials}" for k in (1, 2)}
    rows, pages = {}, {}
    for k, name in names.items():      # the report first, alone on the machine
        rows[k], pages[k] = bench_report(url, name, args.out)
        rows[k] = {"study": name, "objectives": k, **rows[k]}
    proc, base = start_dashboard(url)
    try:
        for k, name in names.items():
            rows[k].update(bench_api(base, storage.get_study_id_from_name(name), url, name))
        if not args.no_browser and find_chromium() is not None:
            with Browser(timeout=300) as browser:
                for k, name in names.items():
                    rows[k].update(bench_browser(browser, pages[k], f"{base}/dashboard/",
                                                 storage.get_study_id_from_name(name), k))
    finally:
        proc.terminate()
        proc.wait(10)
    rows = list(rows.values())
    for row in rows:
        row["build_s"] = round(build[row["study"]], 1)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         f"1-min load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end",
              "python": platform.python_version(), "optuna": optuna.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "trials": args.trials,
              "command": " ".join(["python", *sys.argv]), "rows": rows}
    (args.out / "report_speed.json").write_text(json.dumps(result, indent=2))
    keys = [k for k in rows[0] if k not in ("study", "browser_errors")]
    print(f"{'metric':32s} " + " ".join(f"{r['study']:>14s}" for r in rows))
    for k in keys:
        print(f"{k:32s} " + " ".join(f"{_fmt(r.get(k)):>14s}" for r in rows))
    for r in rows:
        if r.get("browser_errors"):
            print(f"console errors in {r['study']}: {r['browser_errors']}")
    print(f"wrote {args.out / 'report_speed.json'}")


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
