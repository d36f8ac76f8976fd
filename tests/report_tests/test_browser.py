"""The report page and the dashboard render in headless Chromium without console errors.

Skipped only where chromium is absent and CI is not set; in CI (CI=true) a missing chromium fails.
"""
from __future__ import annotations

import os

import pytest
from optuna.trial import TrialState

from autotune import report

from .browser import Browser, find_chromium
from .helpers import study_id

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
pytestmark = pytest.mark.skipif(find_chromium() is None and not IN_CI,
                                reason="chromium is not installed (apt-get install -y chromium)")

ALL_FIGURES_DRAWN = ("document.querySelectorAll('div.fig').length > 0 && "
                     "document.querySelectorAll('div.fig.js-plotly-plot').length === "
                     "document.querySelectorAll('div.fig').length")


@pytest.fixture(scope="module")
def browser():
    with Browser(width=1280, height=900, timeout=60) as b:
        yield b


@pytest.fixture(autouse=True)
def fresh_errors(browser):
    browser.errors.clear()


@pytest.mark.parametrize("which", ["single_study", "multi_study"])
def test_report_draws_every_figure_without_console_errors(browser, which, request, tmp_path):
    study = request.getfixturevalue(which)
    page = report.write_report(study, tmp_path / "report.html")
    browser.open(page.as_uri() + "?all", ready=ALL_FIGURES_DRAWN)
    assert browser.errors == []
    n_svg = browser.evaluate("document.querySelectorAll('div.fig .main-svg').length")
    assert n_svg >= browser.evaluate("document.querySelectorAll('div.fig').length")


def test_report_draws_figures_as_they_scroll_into_view(browser, single_study, tmp_path):
    page = report.write_report(single_study, tmp_path / "report.html")
    browser.open(page.as_uri(), ready="document.querySelector('#plot-history.js-plotly-plot')")
    assert browser.evaluate("document.querySelector('#plot-sparsity').dataset.drawn") is None
    browser.evaluate("document.getElementById('sparsity').scrollIntoView()")
    drawn = ("new Promise(r => setTimeout(() => "
             "r(!!document.querySelector('#plot-sparsity.js-plotly-plot')), 1500))")
    assert browser.evaluate(drawn) is True
    assert browser.errors == []


@pytest.mark.parametrize("name, ready", [("single", "Hyperparameter Importance"), ("multi", "Pareto Front")])
def test_dashboard_study_page_renders_without_console_errors(browser, server, name, ready):
    url = f"{server.url}studies/{study_id(server, name)}"
    browser.open(url, ready=f"document.body.innerText.includes({ready!r})", settle_s=1.5)
    assert browser.errors == []


def test_dashboard_trial_page_shows_the_failure_reason(browser, server, single_study):
    failed = next(t for t in single_study.trials if t.state == TrialState.FAIL)
    url = f"{server.url}studies/{study_id(server, 'single')}/trials?numbers={failed.number}"
    reason = failed.user_attrs["fail_reason"]
    browser.open(url, ready=f"document.body.innerText.includes({reason!r})", settle_s=0.5)
    assert "fail_reason" in browser.evaluate("document.body.innerText")
    assert browser.errors == []
