"""The study report: one offline page whose figures carry the study's data."""
from __future__ import annotations

import importlib.util
import json
import re

import optuna
import plotly.offline
import pytest
from optuna.trial import TrialState

from autotune import report
from autotune.report import figures as figs
from autotune.report import snapshot

from .synthetic import WARM_SOURCE, build_study


def embedded_figures(page: str) -> dict[str, dict]:
    return {m.group(1): json.loads(m.group(2).replace("<\\/", "</")) for m in re.finditer(
        r'<script type="application/json" id="fig-([\w-]+)">(.*?)</script>', page, re.S)}


def section_titles(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


@pytest.fixture(scope="module")
def single_page(single_study, tmp_path_factory) -> str:
    out = report.write_report(single_study, tmp_path_factory.mktemp("r") / "single.html")
    return out.read_text()


@pytest.fixture(scope="module")
def multi_page(multi_study, tmp_path_factory) -> str:
    out = report.write_report(multi_study, tmp_path_factory.mktemp("r") / "multi.html")
    return out.read_text()


def test_page_is_self_contained_with_plotly_inline_once(single_page):
    assert "<script src" not in single_page and "<link rel=\"stylesheet\"" not in single_page
    assert single_page.count("<script type=\"text/javascript\">") == 1
    assert single_page.count(f"* plotly.js v{plotly.offline.get_plotlyjs_version()}") == 1
    assert "Plotly.newPlot(" in single_page


def test_single_objective_report_has_every_view(single_page):
    assert set(embedded_figures(single_page)) == {
        "history", "importances", "curves", "parallel", "slice", "contour", "expert-load", "sparsity"}
    titles = section_titles(single_page)
    assert "Warm-start provenance" in titles and "Top trials" in titles and "Failed trials" in titles


def test_history_plots_every_complete_trial_value(single_study, single_page):
    data = embedded_figures(single_page)["history"]["data"]
    complete = {t.number: t.value for t in single_study.trials if t.state == TrialState.COMPLETE}
    points = next(tr for tr in data if tr.get("mode") == "markers")
    assert dict(zip(points["x"], points["y"])) == pytest.approx(complete)


def test_learning_curves_mark_where_each_pruned_trial_stopped(single_study, single_page):
    data = embedded_figures(single_page)["curves"]["data"]
    pruned = [t for t in single_study.trials if t.state == TrialState.PRUNED]
    marks = next(tr for tr in data if tr["name"] == "pruned here")
    expected = {(max(t.intermediate_values), t.intermediate_values[max(t.intermediate_values)]) for t in pruned}
    assert set(zip(marks["x"], marks["y"])) == expected
    assert marks["marker"]["symbol"] == "x"
    best = single_study.best_trial
    best_curve = next(tr for tr in data if tr["name"] == f"trial {best.number}")
    assert best_curve["y"] == pytest.approx([best.intermediate_values[s] for s in best_curve["x"]])


def test_importances_rank_the_space_and_contour_uses_the_top_two(single_study, single_page):
    figures = embedded_figures(single_page)
    bars = figures["importances"]["data"][0]
    assert set(bars["y"]) == set(single_study.best_trial.params)
    top_two = list(reversed(bars["y"]))[:2]     # optuna draws the most important at the top
    layout = figures["contour"]["layout"]
    assert {layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"]} == set(top_two)


def test_expert_load_shows_the_best_trials_routing(single_study, single_page):
    data = embedded_figures(single_page)["expert-load"]["data"]
    best = single_study.best_trial
    assert data[0]["z"] == best.user_attrs["metrics"]["expert_load"]
    assert len(data) == figs.BEST_HIGHLIGHTED


def test_sparsity_view_plots_keep_ratio_used_of_complete_trials(single_study, single_page):
    data = embedded_figures(single_page)["sparsity"]["data"]
    keep = [tr for tr in data if tr["xaxis"] == "x2"]
    plotted = {y: x for tr in keep for x, y in zip(tr["x"], tr["y"])}
    expected = {t.value: t.user_attrs["metrics"]["keep_ratio_used"] for t in single_study.trials
                if t.state == TrialState.COMPLETE}
    assert plotted == pytest.approx(expected)


def test_tables_give_top_trials_warm_start_and_failure_reasons(single_study, single_page):
    best = single_study.best_trial
    top = single_page.split('id="top-trials"')[1]
    first_row = re.search(r"<tbody><tr>(.*?)</tr>", top).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", first_row)[:2] == ["1", str(best.number)]
    warm = single_page.split('id="warm-start"')[1].split("</section>")[0]
    assert "enqueue" in warm and WARM_SOURCE in warm
    n_failed = sum(t.state == TrialState.FAIL for t in single_study.trials)
    failures = single_page.split('id="failures"')[1].split("</section>")[0]
    counts = [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', failures)]
    assert sum(counts) == n_failed and "CUDA out of memory" in failures


def test_multi_objective_report_draws_the_pareto_front(multi_study, multi_page):
    figures = embedded_figures(multi_page)
    assert {"history", "history1", "pareto"} <= set(figures)
    front = {tuple(t.values) for t in multi_study.best_trials}
    traces = [set(zip(tr["x"], tr["y"])) for tr in figures["pareto"]["data"]]
    assert front in traces                          # the front is drawn as its own trace
    assert set().union(*traces) == {tuple(t.values) for t in multi_study.trials
                                    if t.state == TrialState.COMPLETE}
    assert f"Pareto front ({len(front)} trials)" in section_titles(multi_page)


def test_views_without_their_data_are_left_out(tmp_path):
    """A user objective that stores no metrics and reports no curve still gets a report."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'plain.db'}", study_name="plain")
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=6)
    page = report.write_report(study, tmp_path / "plain.html").read_text()
    figures = embedded_figures(page)
    assert "history" in figures
    assert not {"curves", "expert-load", "sparsity", "pareto"} & set(figures)
    assert "Warm-start provenance" not in section_titles(page)


@pytest.mark.parametrize("n_complete", [0, 1])
def test_too_few_trials_say_so_instead_of_failing(tmp_path, n_complete):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'few.db'}", study_name="few")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n_complete)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    page = report.write_report(study, tmp_path / "few.html").read_text()
    assert "Too few complete trials to rank parameters." in page
    assert "boom" in page


def test_large_studies_are_downsampled():
    study = build_study(optuna.storages.InMemoryStorage(), "big", 2500, objectives=1, seed=3)
    snap = snapshot.Snapshot(study)
    curves = figs.learning_curves(snap, ["val_loss"])
    lines = sum(tr["y"].count(None) if tr["mode"] == "lines" else 0 for tr in curves.to_dict()["data"])
    assert lines <= figs.MAX_CURVES
    assert "of" in curves.layout.title.text
    parallel = figs.parallel(snap, ["val_loss"], ["lr", "top_k"])
    assert f"{snapshot.MAX_SCATTER_TRIALS} of 2500 trials" in parallel.layout.title.text
    sampled = snapshot.sample(snap)
    assert len(sampled.trials) == snapshot.MAX_SCATTER_TRIALS
    assert {t.number for t in snapshot.ranked(snap, snapshot.MAX_SCATTER_TRIALS // 5)} <= \
        {t.number for t in sampled.trials}
    assert all("metrics" not in t.user_attrs for t in sampled.trials)


def test_png_needs_kaleido_and_unknown_formats_are_refused(single_study, tmp_path, monkeypatch):
    with pytest.raises(report.ReportError, match="report format 'pdf'"):
        report.write_report(single_study, tmp_path / "r.pdf", fmt="pdf")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(report.ReportError, match="kaleido"):
        report.write_report(single_study, tmp_path / "r.png", fmt="png")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(importlib.util.find_spec("kaleido") is None,
                    reason="kaleido is optional (pip install 'autotune[png]')")
def test_png_export_writes_one_image_per_figure(single_study, tmp_path):
    folder = report.write_report(single_study, tmp_path / "single.png", fmt="png")
    assert folder == tmp_path / "single"
    expected = {s.key for s in report.build_sections(single_study) if s.figure is not None}
    assert {p.stem for p in folder.glob("*.png")} == expected
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in folder.glob("*.png"))


def test_maximized_objectives_rank_the_highest_first(tmp_path):
    """The flat form's ``accuracy: maximize`` next to ``latency: minimize``."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'max.db'}", study_name="max",
                                directions=["maximize", "minimize"])
    for i, (acc, lat) in enumerate([(0.9, 5.0), (0.7, 2.0), (0.95, 9.0), (0.6, 8.0), (0.8, 4.0)]):
        study.add_trial(optuna.trial.create_trial(
            params={"x": i / 10}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            values=[acc, lat], user_attrs={"metrics": {"accuracy": acc, "latency": lat}}))
    snap = snapshot.Snapshot(study)
    assert [t.values[0] for t in snapshot.ranked(snap)] == [0.95, 0.9, 0.8, 0.7, 0.6]  # front first, then the rest
    page = report.write_report(study, tmp_path / "max.html").read_text()
    top = page.split('id="top-trials"')[1]
    assert re.findall(r"<td[^>]*>(.*?)</td>", re.search(r"<tbody><tr>(.*?)</tr>", top).group(1))[1] == "2"
    assert "accuracy (maximize), latency (minimize)" in page


def _curve_study(tmp_path) -> optuna.Study:
    """Two objectives, each complete trial with a stored ``curve``, one interrupted trial, and the
    metric names set the way autotune sets them (an Optuna 'experimental' call)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", study_name="curves",
                                directions=["minimize", "maximize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["val_loss", "accuracy"])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for n in range(6):
        x = n / 6
        curve = [[s, {"val_loss": x + 1 / s, "accuracy": 1 - x - 1 / (s + 1)}] for s in (1, 2, 3)]
        study.add_trial(optuna.trial.create_trial(
            params={"x": x}, distributions=dist, values=[x + 1 / 3, 1 - x - 0.25],
            user_attrs={"curve": curve, "time_s": {"setup": 1.0, "train": 5.0 + n, "compile": 2.0,
                                                   "total": 8.0 + n}}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=dist,
                                              user_attrs={"stop_reason": "interrupted"}))
    return study


@pytest.mark.filterwarnings("error::optuna.exceptions.ExperimentalWarning")
def test_multi_objective_report_draws_each_objectives_stored_curve_with_one_link_each(tmp_path):
    study = _curve_study(tmp_path)
    page = report.write_report(study, tmp_path / "c.html").read_text()
    figures = embedded_figures(page)
    for key, metric in (("curves", "val_loss"), ("curves1", "accuracy")):
        assert figures[key]["layout"]["yaxis"]["title"]["text"] == metric
        drawn = {round(y, 9) for tr in figures[key]["data"] for y in tr["y"] if y is not None}
        assert drawn == {round(p[1][metric], 9) for t in study.trials for p in t.user_attrs.get("curve", [])}
    links = re.findall(r'<a href="#[\w-]+">(.*?)</a>', page.split("<nav>")[1].split("</nav>")[0])
    assert len(links) == len(set(links))
    assert {"History: val_loss", "History: accuracy", "Curves: val_loss", "Curves: accuracy"} <= set(links)


def test_pareto_front_has_a_legend_and_no_colour_bars_and_trial_axes_have_whole_numbers(tmp_path):
    figures = embedded_figures(report.write_report(_curve_study(tmp_path), tmp_path / "c.html").read_text())
    pareto = figures["pareto"]["data"]
    assert not any(tr["marker"].get("showscale", False) for tr in pareto)
    assert sorted(tr["name"].split(" (")[0] for tr in pareto) == ["Pareto front", "other trials"]
    for key in ("history", "history1", "time"):
        axis = figures[key]["layout"]["xaxis"]
        assert axis["tickformat"] == "d" and axis["dtick"] >= 1 and int(axis["dtick"]) == axis["dtick"]


def test_time_split_stacks_each_trials_parts(tmp_path):
    study = _curve_study(tmp_path)
    page = report.write_report(study, tmp_path / "c.html").read_text()
    time_fig = embedded_figures(page)["time"]
    assert time_fig["layout"]["barmode"] == "stack"
    parts = {tr["name"].split(" (")[0]: tr for tr in time_fig["data"]}
    assert set(parts) == {"train", "compile", "setup"}          # no "total" segment
    timed = [t for t in study.trials if "time_s" in t.user_attrs]
    assert parts["train"]["x"] == [t.number for t in timed]
    assert parts["train"]["y"] == [t.user_attrs["time_s"]["train"] for t in timed]
    assert "training steps 71 % in all" in time_fig["layout"]["title"]["text"]   # 45 s of 63


def test_interrupted_trials_are_shown_apart_from_failures(tmp_path):
    page = report.write_report(_curve_study(tmp_path), tmp_path / "c.html").read_text()
    summary = page.split('id="summary"')[1].split("</section>")[0]
    assert "7: 6 complete, 1 interrupted" in summary and "failed" not in summary
    assert 'id="failures"' not in page

