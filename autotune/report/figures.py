"""The figures of the study report, each built from a study snapshot, each None when it does not apply.

Owns: which plotly figure shows what (optuna.visualization where it fits: history, importances, parallel
coordinates, slice, contour, Pareto front; our own for learning curves (intermediate values, or the
``curve`` user attr of multi-objective trials), the split of each trial's time, and the expert-load
and attention-sparsity views), and how many trials each view draws (``snapshot.sample``), so that a study
of 5,000 trials stays light in the browser.
Must not know about: the model beyond the names of the metrics trials store in their ``metrics`` user
attr (``expert_load`` [n_layers][num_experts], ``expert_load_cv``, ``keep_ratio_used``); any of them may
be missing, and then its view is skipped.
"""
from __future__ import annotations

import logging
import math
import random
import warnings
from typing import Any, Callable, Sequence

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from autotune.outcomes import TIME_ATTR, time_parts, time_shares
from autotune.report.snapshot import (MAX_SCATTER_TRIALS, SAMPLE_SEED, Snapshot, completed, metrics_of,
                                      ranked, sample, signs)

_log = logging.getLogger("autotune")

MAX_CONTOUR_TRIALS = 250      # optuna's contour grid has (distinct values)^2 cells
MAX_CURVES = 300              # learning curves drawn (best complete, the rest sampled)
MAX_CURVE_POINTS = 100        # points per curve (even stride over the steps)
MAX_TIME_BARS = 500           # trials in the time-split view (the latest ones)
BEST_HIGHLIGHTED = 5          # best trials drawn in their own colour / shown in the expert-load view


def _titled(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", margin={"t": 60})
    return fig


def _safe(build: Callable[[], go.Figure], what: str) -> go.Figure | None:
    """optuna.visualization raises or warns on studies it cannot plot; a report skips that view.
    Its ExperimentalWarnings are Optuna's business, not the reader's: silenced here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return build()
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        _log.info("report: %s skipped: %s", what, exc)
        return None


def _trial_number_axis(fig: go.Figure, trials: Sequence[FrozenTrial]) -> None:
    """Whole-number ticks on the x axis of trial numbers: 1, 2 or 5 x 10^k apart, at most ~12."""
    numbers = [t.number for t in trials]
    span = max(numbers) - min(numbers) if numbers else 0
    step, scale = 1, 1
    while span / step > 12:
        step = next((m * scale for m in (1, 2, 5) if span / (m * scale) <= 12), 10 * scale)
        scale *= 10
    fig.update_xaxes(dtick=step, tickformat="d")


# -- optuna.visualization views ----------------------------------------------------------------------
def history(study: Snapshot, names: Sequence[str]) -> list[go.Figure]:
    """Objective value per trial with the best-so-far line; one figure per objective."""
    if not completed(study):
        return []
    vis = optuna.visualization
    if len(names) == 1:
        fig = _safe(lambda: vis.plot_optimization_history(study, target_name=names[0]), "history")
        figs = [_titled(fig, f"Optimization history: {names[0]}")] if fig else []
    else:
        figs = []
        for i, name in enumerate(names):
            fig = _safe(lambda i=i, name=name: vis.plot_optimization_history(
                study, target=lambda t: t.values[i], target_name=name), f"history of {name}")
            if fig:
                figs.append(_titled(fig, f"Optimization history: {name}"))
    for fig in figs:
        _trial_number_axis(fig, completed(study))
    return figs


def importances(study: Snapshot, names: Sequence[str]) -> tuple[go.Figure | None, list[str]]:
    """Parameter importances (PED-ANOVA, optuna's default) of each objective, and the parameter names
    ranked by their importance for the first one (empty when there are too few trials to say)."""
    complete = completed(study)
    if len(complete) < 3 or not any(t.params for t in complete):
        return None, []
    try:
        first = _importance(study, 0)
    except (ValueError, RuntimeError) as exc:
        _log.info("report: importances skipped: %s", exc)
        return None, []
    order = list(first)
    if len(names) == 1:
        fig = _safe(lambda: optuna.visualization.plot_param_importances(study, target_name=names[0]),
                    "importances")
    else:
        fig = _safe(lambda: _importances_per_objective(study, names), "importances")
    return (_titled(fig, "Parameter importances (PED-ANOVA)") if fig else None), order


def _importance(study: Snapshot, objective: int) -> dict[str, float]:
    """PED-ANOVA ranks parameters by how they reach low target values: maximized ones are negated."""
    sign = signs(study)[objective]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        return optuna.importance.get_param_importances(
            study, target=lambda t: sign * t.values[objective])


def _importances_per_objective(study: Snapshot, names: Sequence[str]) -> go.Figure:
    fig = go.Figure()
    for i, name in enumerate(names):
        imp = _importance(study, i)
        params = list(imp)[::-1]
        fig.add_trace(go.Bar(x=[imp[p] for p in params], y=params, orientation="h", name=name))
    fig.update_layout(barmode="group", xaxis_title="importance")
    return fig


def parallel(study: Snapshot, names: Sequence[str], params: Sequence[str]) -> go.Figure | None:
    if len(completed(study)) < 2 or not params:
        return None
    view = sample(study)
    fig = _safe(lambda: optuna.visualization.plot_parallel_coordinate(
        view, params=list(params[:8]), target=lambda t: t.values[0], target_name=names[0]),
        "parallel coordinates")
    return _titled(fig, _sampled_title(f"Parallel coordinates ({names[0]})", view, study)) if fig else None


def slices(study: Snapshot, names: Sequence[str], params: Sequence[str]) -> go.Figure | None:
    if not completed(study) or not params:
        return None
    view = sample(study)
    fig = _safe(lambda: optuna.visualization.plot_slice(
        view, params=list(params[:4]), target=lambda t: t.values[0], target_name=names[0]), "slice")
    return _titled(fig, _sampled_title(f"Slice of the top parameters ({names[0]})", view, study)) if fig else None


def contour(study: Snapshot, names: Sequence[str], params: Sequence[str]) -> go.Figure | None:
    if len(completed(study)) < 3 or len(params) < 2:
        return None
    view = sample(study, MAX_CONTOUR_TRIALS)
    fig = _safe(lambda: optuna.visualization.plot_contour(
        view, params=list(params[:2]), target=lambda t: t.values[0], target_name=names[0]), "contour")
    return _titled(fig, _sampled_title(f"Contour of the two top parameters ({names[0]})", view, study)) \
        if fig else None


def pareto(study: Snapshot, names: Sequence[str]) -> go.Figure | None:
    if len(names) not in (2, 3) or not completed(study):
        return None
    front = study.best_trials
    view = sample(study, keep=front)     # the whole front is kept, so the subset has the same front
    fig = _safe(lambda: optuna.visualization.plot_pareto_front(view, target_names=list(names)),
                "Pareto front")
    if fig is None:
        return None
    _plain_pareto_colours(fig, {tuple(t.values) for t in front}, len(view.get_trials(deepcopy=False)))
    return _titled(fig, _sampled_title(f"Pareto front ({len(front)} trials)", view, study))


def _plain_pareto_colours(fig: go.Figure, front: set[tuple[float, ...]], n_trials: int) -> None:
    """optuna shades both point sets by trial number, with two colour bars ('Trial', 'Best Trial')
    that say little: one colour per set and a legend instead (the hover names each trial)."""
    for trace in fig.data:
        points = set(zip(*(getattr(trace, a) for a in ("x", "y", "z") if getattr(trace, a, None) is not None)))
        on_front = bool(points) and points <= front
        trace.marker.showscale = False
        trace.marker.colorscale = None
        trace.marker.color = "rgb(214,39,40)" if on_front else "rgba(31,119,180,0.45)"
        trace.name = f"Pareto front ({len(points)})" if on_front else f"other trials ({len(points)})"
        trace.showlegend = True


def _sampled_title(title: str, view: optuna.Study, study: optuna.Study) -> str:
    n_view, n_all = len(view.get_trials(deepcopy=False)), len(study.get_trials(deepcopy=False))
    return title if n_view == n_all else f"{title}: best and a sample, {n_view} of {n_all} trials"


# -- our own views ----------------------------------------------------------------------------------
def _thin(curve: dict[int, float]) -> tuple[list[int], list[float]]:
    steps = sorted(curve)
    stride = max(1, math.ceil(len(steps) / MAX_CURVE_POINTS))
    picked = steps[::stride]
    if picked[-1] != steps[-1]:
        picked.append(steps[-1])    # the last point is where a pruned trial stopped
    return picked, [curve[s] for s in picked]


def _joined(trials: Sequence[FrozenTrial], curve_of: Callable[[FrozenTrial], dict[int, float]]
            ) -> tuple[list, list, list]:
    """Many curves in one trace (None between curves): one trace draws thousands of lines quickly."""
    xs: list = []
    ys: list = []
    text: list = []
    for t in trials:
        x, y = _thin(curve_of(t))
        xs += x + [None]
        ys += y + [None]
        text += [f"trial {t.number}"] * len(x) + [None]
    return xs, ys, text


def stored_curve(trial: FrozenTrial, metric: str) -> dict[int, float]:
    """One metric of the ``curve`` user attr (``[[step, {metric: value}], ...]``, what trials of
    several objectives store in place of intermediate values), finite numbers only."""
    curve = trial.user_attrs.get("curve")
    points: dict[int, float] = {}
    if not isinstance(curve, list):
        return points
    for point in curve:
        if (isinstance(point, (list, tuple)) and len(point) == 2 and isinstance(point[1], dict)
                and isinstance(point[0], int) and _number(point[1].get(metric)) is not None):
            points[point[0]] = float(point[1][metric])
    return points


def learning_curves(study: Snapshot, names: Sequence[str], metric: str | None = None) -> go.Figure | None:
    """Intermediate values per step (or, with ``metric``, that metric of the stored ``curve``):
    complete trials grey, pruned red with an x where they stopped, the best trials in colour. At most
    MAX_CURVES curves of MAX_CURVE_POINTS points each."""
    def curve_of(t: FrozenTrial) -> dict[int, float]:
        return t.intermediate_values if metric is None else stored_curve(t, metric)

    with_curves = [t for t in study.get_trials(deepcopy=False) if curve_of(t)]
    if not with_curves:
        return None
    best = [t for t in ranked(study, BEST_HIGHLIGHTED) if curve_of(t)]
    best_ids = {t.number for t in best}
    rng = random.Random(SAMPLE_SEED)
    complete = [t for t in with_curves if t.state == TrialState.COMPLETE and t.number not in best_ids]
    pruned = [t for t in with_curves if t.state == TrialState.PRUNED]
    budget = max(0, MAX_CURVES - len(best))
    shown_complete = _take(complete, budget // 2 if len(pruned) > budget // 2 else budget - len(pruned), rng)
    shown_pruned = _take(pruned, budget - len(shown_complete), rng)

    fig = go.Figure()
    x, y, text = _joined(shown_complete, curve_of)
    fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines", name=f"complete ({len(complete)})",
                             line={"color": "rgba(120,120,120,0.35)", "width": 1}, hoverinfo="text+y"))
    x, y, text = _joined(shown_pruned, curve_of)
    fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines", name=f"pruned ({len(pruned)})",
                             line={"color": "rgba(214,39,40,0.35)", "width": 1}, hoverinfo="text+y"))
    ends = [(max(curve_of(t)), curve_of(t)[max(curve_of(t))], t.number) for t in shown_pruned]
    fig.add_trace(go.Scatter(x=[e[0] for e in ends], y=[e[1] for e in ends], mode="markers",
                             text=[f"trial {e[2]} pruned" for e in ends], name="pruned here",
                             marker={"symbol": "x", "color": "rgb(214,39,40)", "size": 7}))
    for t in best:
        x, y = _thin(curve_of(t))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"trial {t.number}",
                                 line={"width": 2}, marker={"size": 4}))
    shown = len(shown_complete) + len(shown_pruned) + len(best)
    shown_metric = metric or names[0]
    title = f"Learning curves: {shown_metric} per step"
    if shown < len(with_curves):
        title += f" ({shown} of {len(with_curves)} curves)"
    fig.update_layout(xaxis_title="step", yaxis_title=shown_metric, hovermode="closest")
    return _titled(fig, title)


def time_split(study: Snapshot) -> go.Figure | None:
    """Where each finished trial's slot time went (its ``time_s``): one stacked bar per trial, one
    segment per part, largest part over the study at the bottom. The latest MAX_TIME_BARS trials."""
    timed = [(t, time_parts(t)) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    timed = [(t, p) for t, p in timed if p is not None][-MAX_TIME_BARS:]
    shares = time_shares(t for t, _ in timed)
    if not shares:
        return None
    fig = go.Figure()
    for part in shares:
        fig.add_trace(go.Bar(
            x=[t.number for t, _ in timed], y=[p.get(part, 0.0) for _, p in timed],
            name=f"{part} ({100 * shares[part]:.0f} %)",
            hovertemplate=f"trial %{{x}}: {part} %{{y:.2f}} s<extra></extra>"))
    fig.update_layout(barmode="stack", xaxis_title="trial", yaxis_title="seconds", hovermode="closest")
    _trial_number_axis(fig, [t for t, _ in timed])
    train = 100 * shares.get("train", 0.0)
    return _titled(fig, f"Where each trial's time went ({TIME_ATTR}; training steps {train:.0f} % in all)")


def _take(trials: list[FrozenTrial], n: int, rng: random.Random) -> list[FrozenTrial]:
    if n <= 0:
        return []
    return trials if len(trials) <= n else sorted(rng.sample(trials, n), key=lambda t: t.number)


def expert_load(study: Snapshot) -> go.Figure | None:
    """Routed-token fraction per layer and expert (``metrics.expert_load``) of the best trials."""
    best = [t for t in ranked(study) if _load_matrix(t) is not None][:BEST_HIGHLIGHTED]
    if not best:
        return None
    fig = make_subplots(rows=1, cols=len(best), subplot_titles=[f"trial {t.number}" for t in best],
                        horizontal_spacing=0.04)
    top = max(max(max(row) for row in _load_matrix(t)) for t in best)
    for col, t in enumerate(best, start=1):
        load = _load_matrix(t)
        fig.add_trace(go.Heatmap(z=load, x=[str(e) for e in range(len(load[0]))],
                                 y=[f"layer {i}" for i in range(len(load))], zmin=0, zmax=top,
                                 coloraxis="coloraxis",
                                 hovertemplate="layer %{y}, expert %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="expert", row=1, col=col)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": "share"}})
    return _titled(fig, "Expert load of the best trials (share of routed tokens; even = 1/experts)")


def _load_matrix(trial: FrozenTrial) -> list[list[float]] | None:
    load = metrics_of(trial).get("expert_load")
    if isinstance(load, list) and load and all(isinstance(v, (int, float)) for v in load):
        load = [load]     # one layer given as a flat list
    if (isinstance(load, list) and load and all(isinstance(row, list) and row for row in load)
            and all(isinstance(v, (int, float)) for row in load for v in row)):
        return load
    return None


SPARSITY_METRICS = (("expert_load_cv", "expert load CV (lower = more balanced)"),
                    ("keep_ratio_used", "share of key blocks attended"))


def balance_and_sparsity(study: Snapshot, names: Sequence[str]) -> go.Figure | None:
    """The first objective against expert-load balance and attention sparsity, best trials marked."""
    complete = completed(sample(study, 2 * MAX_SCATTER_TRIALS, light=False))
    present = [(m, label) for m, label in SPARSITY_METRICS
               if any(_number(metrics_of(t).get(m)) is not None for t in complete)]
    if not present:
        return None
    best_ids = {t.number for t in ranked(study, BEST_HIGHLIGHTED)}
    fig = make_subplots(rows=1, cols=len(present), shared_yaxes=True,
                        subplot_titles=[label for _, label in present])
    for col, (metric, _) in enumerate(present, start=1):
        for is_best in (False, True):
            pts = [(float(metrics_of(t)[metric]), t.values[0], t.number) for t in complete
                   if (t.number in best_ids) == is_best and _number(metrics_of(t).get(metric)) is not None]
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], text=[f"trial {p[2]}" for p in pts],
                mode="markers", name="best trials" if is_best else "complete trials",
                legendgroup=str(is_best), showlegend=col == 1,
                marker={"size": 10 if is_best else 5, "color": "rgb(255,127,14)" if is_best
                        else "rgba(31,119,180,0.5)", "symbol": "star" if is_best else "circle"}),
                row=1, col=col)
        fig.update_xaxes(title_text=metric, row=1, col=col)
    fig.update_yaxes(title_text=names[0], row=1, col=1)
    return _titled(fig, f"Balance and sparsity against {names[0]}")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)
