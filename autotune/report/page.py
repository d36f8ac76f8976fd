"""The study report: one self-contained HTML page (plotly.js inline, works offline), or PNG files.

Owns: which views the report has and in what order, the page around them (summary, warm-start
provenance, top-trials and failure tables), and static export. The figures themselves are built in
``figures``, from the study as ``snapshot`` reads it.
Must not know about: training, the model (only metric names trials store), how the study was run.

    from autotune.report import write_report
    write_report(optuna.load_study(study_name="moe-small", storage=url), Path("report.html"))
"""
from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import importlib.util
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from optuna.trial import FrozenTrial, TrialState

from autotune.edges import edge_notes
from autotune.report import figures as figs
from autotune.report.snapshot import Snapshot, completed, metrics_of, ranked
from autotune.outcomes import describe, failed_on_their_own, outcome_counts
from autotune.progress import KEY_METRICS, format_value, objective_names

TOP_TRIALS = 20
FORMATS = ("html", "png")


class ReportError(Exception):
    """A report that cannot be written as asked (unknown format, PNG export unavailable)."""


@dataclass
class Section:
    key: str                  # anchor and figure id: ``fig-<key>`` holds the figure's JSON
    title: str
    figure: go.Figure | None = None
    html: str = ""            # tables and notes, already escaped
    nav: str = ""             # the navigation link's text (default: the title's first words)


def build_sections(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[Section]:
    """Every view that applies to this study, in page order (views without data are left out);
    ``trials``: the study's trials when the caller read them already."""
    snap = Snapshot(study, None if trials is None else list(trials))
    names = objective_names(study)
    sections = [Section("summary", "Summary", html=_summary_html(snap, names))]
    several = len(names) > 1
    for i, fig in enumerate(figs.history(snap, names)):
        sections.append(Section(f"history{i}" if i else "history", fig.layout.title.text, fig,
                                nav=f"History: {names[i]}" if several else ""))
    importance_fig, ranked_params = figs.importances(snap, names)
    if not ranked_params:       # too few trials to rank: keep the space's order
        ranked_params = sorted({p for t in completed(snap) for p in t.params})
    curves = [figs.learning_curves(snap, names, metric=name) for name in names] if several else []
    if not any(curves):    # one objective, or several without stored curves: intermediate values
        curves = [figs.learning_curves(snap, names)]
    candidates = [
        ("pareto", figs.pareto(snap, names)),
        ("importances", importance_fig),
        *((f"curves{i}" if i else "curves", fig) for i, fig in enumerate(curves)),
        ("time", figs.time_split(snap)),
        ("parallel", figs.parallel(snap, names, ranked_params)),
        ("slice", figs.slices(snap, names, ranked_params)),
        ("contour", figs.contour(snap, names, ranked_params)),
        ("expert-load", figs.expert_load(snap)),
        ("sparsity", figs.balance_and_sparsity(snap, names)),
    ]
    sections += [Section(key, fig.layout.title.text, fig,
                         nav=f"Curves: {fig.layout.yaxis.title.text}" if key.startswith("curves") and several else "")
                 for key, fig in candidates if fig is not None]
    if importance_fig is None:
        sections.append(Section("importances", "Parameter importances",
                                html="<p class=note>Too few complete trials to rank parameters.</p>"))
    warm = _warm_start_html(snap)
    if warm:
        sections.append(Section("warm-start", "Warm-start provenance", html=warm))
    sections.append(Section("top-trials", "Top trials", html=_top_trials_html(snap, names)))
    failures = _failures_html(snap)
    if failures:
        sections.append(Section("failures", "Failed trials", html=failures))
    return sections


def write_report(study: optuna.Study, out: Path, fmt: str = "html",
                 trials: Sequence[FrozenTrial] | None = None) -> Path:
    """Write the report of ``study`` (of ``trials``, its trials read already, if given); returns
    what was written.

    ``html``: one page at ``out``. ``png``: one image per figure, ``<name>-<view>.png``, in the folder
    ``out`` (``report.png`` or ``report.html`` -> folder ``report``); needs kaleido.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise ReportError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "png":
        _check_kaleido()
    sections = build_sections(study, trials)
    if fmt == "png":
        return _write_png(sections, out.with_suffix("") if out.suffix else out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(study.study_name, sections), encoding="utf-8")
    return out


# -- HTML --------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:16px 32px}header h1{margin:0;font-size:22px}
nav{padding:8px 32px;background:#eef0f3;position:sticky;top:0;z-index:10;font-size:13px}
nav a{margin-right:14px;color:#1f4f99;text-decoration:none}
section{background:#fff;margin:16px 32px;padding:8px 20px 16px;border-radius:6px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}section h2{font-size:17px}
.fig{min-height:460px}table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666}
"""

# Figures are drawn when scrolled near, so that a long page of large studies opens at once.
_RENDER_JS = """
(function(){
  function draw(div){
    if(div.dataset.drawn) return; div.dataset.drawn = "1";
    try {   // one figure that fails must not keep the others from drawing
      var fig = JSON.parse(document.getElementById("fig-" + div.dataset.fig).textContent);
      fig.layout.title = {text: ""};   // the section heading says it
      fig.layout.margin = Object.assign({}, fig.layout.margin, {t: 30});
      Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
    } catch(err) { console.error("figure " + div.dataset.fig + ": " + err); }
  }
  var divs = document.querySelectorAll("div.fig");
  function drawAll(){ divs.forEach(draw); }
  window.addEventListener("beforeprint", drawAll);
  if(!("IntersectionObserver" in window) || new URLSearchParams(location.search).has("all")){ drawAll(); return; }
  var seen = new IntersectionObserver(function(entries){
    entries.forEach(function(e){ if(e.isIntersecting){ seen.unobserve(e.target); draw(e.target); } });
  }, {rootMargin: "600px"});
  divs.forEach(function(d){ seen.observe(d); });
})();
"""


def figure_json(fig: go.Figure) -> str:
    """The figure as JSON that is safe inside a <script> element."""
    return fig.to_json().replace("</", "<\\/")


def render_html(study_name: str, sections: Sequence[Section]) -> str:
    esc = html.escape
    nav = "".join(f'<a href="#{s.key}">{esc(s.nav or _short(s.title))}</a>' for s in sections)
    body, data = [], []
    for s in sections:
        inner = s.html
        if s.figure is not None:
            inner += f'<div class="fig" id="plot-{s.key}" data-fig="{s.key}"></div>'
            data.append(f'<script type="application/json" id="fig-{s.key}">{figure_json(s.figure)}</script>')
        body.append(f'<section id="{s.key}"><h2>{esc(s.title)}</h2>{inner}</section>')
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>autotune report: {esc(study_name)}</title>",
        '<link rel="icon" href="data:,">', f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>',
        "</head><body>",
        f"<header><h1>autotune report: {esc(study_name)}</h1><div>generated {stamp}</div></header>",
        f"<nav>{nav}</nav>", *body, *data, f"<script>{_RENDER_JS}</script>", "</body></html>"])


def _short(title: str) -> str:
    return title.split(":")[0].split(" (")[0]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{esc(str(c))}</td>' if i in numeric else f"<td>{esc(str(c))}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_html(study: Snapshot, names: Sequence[str]) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = outcome_counts(trials)
    directions = [d.name.lower() for d in study.directions]
    rows = [("objectives", ", ".join(f"{n} ({d})" for n, d in zip(names, directions))),
            ("trials", f"{len(trials)}: {describe(counts)}" if trials else "none yet")]
    if counts.get("interrupted"):
        rows.append(("interrupted", f"{counts['interrupted']} trials cut by Ctrl-C or --hard-stop; "
                                    "not failures: each was re-queued and runs first on resume"))
    best = ranked(study)
    if len(names) > 1:
        rows.append(("Pareto front", f"{len(study.best_trials)} trials" if best else "-"))
    elif best:
        b = best[0]
        rows.append(("best trial", f"#{b.number}: {names[0]}={format_value(b.values[0])}"))
        rows.append(("best params", _params_text(b)))
    rows.extend(("range", line) for line in edge_notes(trials, study.directions))
    return _table(("", ""), rows)


def _params_text(t: FrozenTrial) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in t.params.items())


def _metrics_text(t: FrozenTrial, exclude: Sequence[str]) -> str:
    m = metrics_of(t)
    return " ".join(f"{k}={format_value(m[k])}" for k in KEY_METRICS if k in m and k not in exclude)


def _gpu(t: FrozenTrial) -> str:
    gpu = t.user_attrs.get("gpu")
    return "" if gpu is None else str(gpu)


def _warm_source(t: FrozenTrial) -> str:
    # `warm_start_from` is what warmstart writes on an enqueued trial; `warm_start` an older name
    w = t.user_attrs.get("warm_start_from", t.user_attrs.get("warm_start"))
    if w is None or w is False:
        return ""
    return w if isinstance(w, str) else "yes"


def _top_trials_html(study: Snapshot, names: Sequence[str]) -> str:
    top = ranked(study, TOP_TRIALS)
    if not top:
        return "<p class=note>No complete trials yet.</p>"
    front = {t.number for t in study.best_trials} if len(names) > 1 else set()
    header = ["rank", "trial", *names, "params", "metrics", "gpu", "warm start"]
    if front:
        header.insert(2, "Pareto")
    rows = []
    for rank, t in enumerate(top, start=1):
        row = [rank, t.number, *(format_value(v) for v in t.values), _params_text(t),
               _metrics_text(t, names), _gpu(t), _warm_source(t)]
        if front:
            row.insert(2, "yes" if t.number in front else "")
        rows.append(row)
    first_value = 3 if front else 2
    return _table(header, rows, numeric=range(first_value, first_value + len(names)))


def _warm_start_html(study: Snapshot) -> str:
    """The study's ``warm_start`` user attr (strategy, trials taken per source) and how the trials
    that came from each source did here."""
    attr = study.user_attrs.get("warm_start")
    trials = study.get_trials(deepcopy=False)
    by_source: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        if _warm_source(t):
            by_source.setdefault(_warm_source(t), []).append(t)
    if not isinstance(attr, dict) and not by_source:
        return ""
    attr = attr if isinstance(attr, dict) else {}
    sources = attr.get("sources") if isinstance(attr.get("sources"), dict) else {}
    rank = {t.number: i for i, t in enumerate(ranked(study), start=1)}
    rows = []
    for name in sorted(set(sources) | set(by_source)):
        here = by_source.get(name, [])
        ranks = [rank[t.number] for t in here if t.number in rank]
        rows.append((name, sources.get(name, "-"), len(here),
                     sum(t.state == TrialState.COMPLETE for t in here), min(ranks) if ranks else "-"))
    strategy = html.escape(str(attr.get("strategy", "unknown")))
    return (f"<p>strategy: <b>{strategy}</b></p>" +
            _table(("source study", "trials taken", "trials here", "complete", "best rank here"), rows,
                   numeric=(1, 2, 3, 4)))


def _failures_html(study: Snapshot) -> str:
    failed = failed_on_their_own(study.get_trials(deepcopy=False))   # not the interrupted ones
    if not failed:
        return ""
    reasons = Counter(" ".join(str(t.user_attrs.get("fail_reason", "no reason stored")).split())[:200]
                      for t in failed)
    return _table(("reason", "trials"), reasons.most_common(10), numeric=(1,))


# -- PNG ---------------------------------------------------------------------------------------------
def _check_kaleido() -> None:
    if importlib.util.find_spec("kaleido") is None:
        raise ReportError("PNG export needs kaleido, which is not installed: pip install 'autotune[png]' "
                          "(or use the HTML report, --format html)")


def _write_png(sections: Sequence[Section], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [s for s in sections if s.figure is not None]
    files = [folder / f"{s.key}.png" for s in drawn]
    try:    # one browser for all figures (kaleido >= 1); older kaleido: one call per figure
        if hasattr(pio, "write_images") and _kaleido_major() >= 1:
            pio.write_images([s.figure for s in drawn], files, width=1200, height=650, scale=1)
        else:
            for s, f in zip(drawn, files):
                s.figure.write_image(f, width=1200, height=650, scale=1)
    except Exception as exc:   # kaleido needs a Chrome it can start; say so, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"PNG export failed: {first} (kaleido >= 1 needs Chrome or Chromium; "
                          "`plotly_get_chrome` installs one)") from None
    return folder


def _kaleido_major() -> int:
    try:
        return int(importlib.metadata.version("kaleido").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0
