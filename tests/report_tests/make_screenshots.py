"""Regenerate docs/screenshots/: the report and the dashboard of synthetic studies, in headless Chromium.

    python tests/report_tests/make_screenshots.py
"""
from __future__ import annotations

import sys
import tempfile
import threading
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))
from browser import Browser  # noqa: E402
from synthetic import build_study  # noqa: E402

from autotune import dashboard, report, store  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ALL_DRAWN = ("document.querySelectorAll('div.fig.js-plotly-plot').length === "
             "document.querySelectorAll('div.fig').length")


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'studies.db'}"
        storage = store.open_storage(url)
        single = build_study(storage, "moe-small", 150, objectives=1, seed=1)
        multi = build_study(storage, "moe-small-pareto", 150, objectives=2, seed=2)
        pages = {s.study_name: report.write_report(s, Path(tmp) / f"{s.study_name}.html") for s in (single, multi)}
        server = dashboard.make_server(url, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with Browser(width=1400, height=1000, timeout=120) as b:
            b.open(pages["moe-small"].as_uri() + "?all", ready=ALL_DRAWN, settle_s=1.5)
            b.screenshot(OUT / "report_top.png", full_page=False)
            for section in ("curves", "expert-load", "sparsity", "top-trials"):
                b.screenshot(OUT / f"report_{section.replace('-', '_')}.png", selector=f"#{section}")
            b.open(pages["moe-small-pareto"].as_uri() + "?all", ready=ALL_DRAWN, settle_s=1.5)
            b.screenshot(OUT / "report_pareto.png", selector="#pareto")
            b.open(f"{server.url}studies/1", ready="document.body.innerText.includes('Hyperparameter Importance')",
                   settle_s=2)
            b.screenshot(OUT / "dashboard_study.png", full_page=False)
            failed = next(t for t in single.trials if t.state.name == "FAIL")
            b.open(f"{server.url}studies/1/trials?numbers={failed.number}",
                   ready="document.body.innerText.includes('fail_reason')", settle_s=1.5)
            b.screenshot(OUT / "dashboard_trial.png", full_page=False)
            assert not b.errors, b.errors
        server.shutdown()
    print("\n".join(str(p) for p in sorted(OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
