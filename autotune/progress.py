"""What ``autotune run`` shows while a study runs, and the table it prints at the end.

Owns: the live terminal view (a rich progress bar with trial n of N, elapsed, the study's ETA and the
best value so far, above a table of running trials: slot/GPU, step of steps, latest metric, the trial's
ETA), the plain log lines that replace it when stdout is not a terminal (CI, files: one line per trial
event, reports at most every ``REPORT_EVERY_S`` per trial), and ``print_summary``.
Must not know about: the model, how trials are scheduled (the scheduler calls the ``Progress`` methods
from its main thread), the storage backend beyond the label it is handed.

    progress = make_progress(steps=600)        # live view on a TTY, plain lines otherwise
    progress.start("moe-small", ["minimize"], ["val_loss"], total=40, done=0, timeout_s=1800)
    progress.trial_started(0, "gpu0", {"lr": 3e-4})
    progress.trial_reported(0, 50, {"val_loss": 1.2})
    progress.trial_finished(study.trials[0])
    progress.close()
"""
from __future__ import annotations

import abc
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence, TextIO

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from autotune.edges import edge_notes
from autotune.outcomes import (INTERRUPTED_BY_ATTR, describe, is_feasible, is_interrupted,
                               is_out_of_memory, outcome_counts)

# States that count toward the trial budget (a FAIL is retried, so it does not).
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# Metrics shown beside the objectives in the summary when a trial has them (user attr ``metrics``).
KEY_METRICS = ("val_loss", "accuracy", "latency_ms", "tokens_per_s", "step_ms", "peak_mem_mb",
               "params_active", "expert_load_cv", "keep_ratio_used")
REPORT_EVERY_S = 30.0   # plain view: at most one report line per trial this often (its first at once)


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names: ``study.metric_names`` when set; else read off a complete trial's
    ``metrics`` user attr (the metric whose value is the objective's); else ``value``/``value0..``."""
    if study.metric_names:
        return list(study.metric_names)
    names = objective_names_for(len(study.directions))
    trial = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if isinstance(t.user_attrs.get("metrics"), dict)), None)
    if trial is None or trial.values is None:
        return names
    metrics = trial.user_attrs["metrics"]
    for i, value in enumerate(trial.values):
        match = next((k for k, v in metrics.items() if isinstance(v, (int, float)) and v == value), None)
        names[i] = match or names[i]
    return names if len(set(names)) == len(names) else objective_names_for(len(names))


def objective_names_for(n: int) -> list[str]:
    return ["value"] if n == 1 else [f"value{i}" for i in range(n)]


def format_duration(seconds: float | None) -> str:
    """``42`` -> ``00:42``; ``3725`` -> ``1:02:05``; None -> ``--:--``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def format_value(value: Any) -> str:
    """Numbers in 4 significant digits (``0.4123``, ``1.2e-05``), whole above 1000 (``50000``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    if 1e3 <= abs(value) < 1e12:
        return f"{value:.0f}"
    return f"{value:.4g}"


def _direction_name(direction: str | StudyDirection) -> str:
    if isinstance(direction, StudyDirection):
        return direction.name.lower()
    return str(direction).lower()


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (signs: +1 minimize)."""
    no_worse = all(s * x <= s * y for x, y, s in zip(a, b, signs))
    return no_worse and any(s * x < s * y for x, y, s in zip(a, b, signs))


@dataclass
class _Running:
    number: int
    slot: str
    params: dict[str, Any]
    started: float
    steps: int | None = None         # the trial's total steps, when known
    step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    first_report: tuple[int, float] | None = None    # (step, clock) of its first report
    reported_at: float = 0.0         # clock of the latest report
    printed_at: float | None = None  # plain view: clock of the last report line

    def seconds_per_step(self) -> float | None:
        """From the steps between its first and latest reports; before a second report, from the
        time since it started (start-up included, so the first estimate is on the long side)."""
        if self.step is None or self.first_report is None:
            return None
        first_step, first_at = self.first_report
        if self.step > first_step:
            return (self.reported_at - first_at) / (self.step - first_step)
        return (self.reported_at - self.started) / max(1, self.step + 1)

    def eta(self, now: float) -> float | None:
        rate = self.seconds_per_step()
        if rate is None or self.steps is None or self.step is None:
            return None
        return max(0.0, (self.steps - self.step) * rate - (now - self.reported_at))

    def step_text(self) -> str:
        if self.step is None:
            return "-"
        return f"{self.step}/{self.steps}" if self.steps is not None else str(self.step)


class Progress(abc.ABC):
    """The state both views share: counts, best so far, running trials, elapsed and ETA.

    ``total`` is the number of finished (COMPLETE + PRUNED) trials the study aims for, counting the
    ``done`` ones already in the store (None when only ``timeout_s`` bounds the run); FAIL trials are
    shown but do not advance the count. The best value and the Pareto front are of
    the trials finished while this view was open. Subclasses decide how state is shown.
    """

    def __init__(self, clock=time.monotonic, steps: int | None = None) -> None:
        self._clock = clock
        self.steps = steps              # a trial's total steps unless its params say otherwise
        self._lock = threading.Lock()   # the live view's refresh thread reads what the scheduler writes
        self.study_name = ""
        self.directions: list[str] = ["minimize"]
        self.metrics: list[str] = ["value"]
        self.total: int | None = None
        self.done = 0
        self.finished = 0               # COMPLETE + PRUNED in this run: what the budget counts
        self.timeout_s: float | None = None
        self.started_at = clock()
        self.counts: dict[str, int] = {}
        self.running: dict[int, _Running] = {}
        self.best: FrozenTrial | None = None       # single objective
        self.pareto: list[FrozenTrial] = []        # several objectives

    # -- the scheduler's calls -------------------------------------------------------------------
    def start(self, study_name: str, directions: Sequence[str | StudyDirection], metrics: Sequence[str],
              total: int | None, done: int = 0, timeout_s: float | None = None) -> None:
        with self._lock:
            self.study_name = study_name
            self.directions = [_direction_name(d) for d in directions] or ["minimize"]
            self.metrics = list(metrics) or objective_names_for(len(self.directions))
            self.total, self.done, self.timeout_s = total, done, timeout_s
            self.started_at = self._clock()

    def trial_started(self, number: int, slot: Any, params: dict[str, Any]) -> None:
        with self._lock:
            steps = params.get("steps", self.steps)
            steps = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
            run = self.running[number] = _Running(number, str(slot), dict(params), self._clock(), steps)
            line = self.started_line(run)
        self._show_event(line)

    def trial_reported(self, number: int, step: int, metrics: dict[str, Any]) -> None:
        with self._lock:
            now = self._clock()
            run = self.running.get(number)
            if run is None:    # a report that overtook its start message: show it anyway
                run = self.running[number] = _Running(number, "?", {}, now, self.steps)
            run.step, run.reported_at = step, now
            if run.first_report is None:
                run.first_report = (step, now)
            run.metrics.update(metrics)
            line = None
            if run.printed_at is None or now - run.printed_at >= REPORT_EVERY_S:
                run.printed_at = now
                line = self.reported_line(run)
        self._show_event(line)

    def trial_finished(self, trial: FrozenTrial) -> None:
        with self._lock:
            self.running.pop(trial.number, None)
            if trial.state in COUNTED:
                self.finished += 1
            state = _state_label(trial)
            self.counts[state] = self.counts.get(state, 0) + 1
            if trial.state == TrialState.COMPLETE and trial.values is not None \
                    and not is_out_of_memory(trial):
                self._update_best(trial)
            line = self.finished_line(trial)
        self._show_finished(line)

    def close(self) -> None:
        """Stop the view; safe to call twice."""

    def notice(self, text: str) -> None:
        """A warning from outside the scheduler (any thread): on stderr, or above the live view."""
        print(text, file=sys.stderr, flush=True)

    # -- shared state -> text --------------------------------------------------------------------
    def _update_best(self, trial: FrozenTrial) -> None:
        signs = [1.0 if d == "minimize" else -1.0 for d in self.directions]
        if len(signs) == 1:
            if self.best is None or signs[0] * trial.values[0] < signs[0] * self.best.values[0]:
                self.best = trial
            return
        if any(_dominates(p.values, trial.values, signs) or p.values == trial.values for p in self.pareto):
            return
        self.pareto = [p for p in self.pareto if not _dominates(trial.values, p.values, signs)]
        self.pareto.append(trial)

    def elapsed(self) -> float:
        return self._clock() - self.started_at

    def eta(self) -> float | None:
        """Seconds left: the rate of this run's finished trials times those left; before the first
        one finishes, the running trials' own ETAs (their step rates) and the trials after them at
        the same pace on as many slots; capped by the timeout."""
        elapsed, now = self.elapsed(), self._clock()
        candidates = []
        if self.timeout_s is not None:
            candidates.append(max(0.0, self.timeout_s - elapsed))
        left = None if self.total is None else max(0, self.total - self.done - self.finished)
        if left is not None and self.finished:
            candidates.append(elapsed / self.finished * left)
        elif left is not None and self.running:
            runs = list(self.running.values())
            known = [(r, r.eta(now)) for r in runs if r.eta(now) is not None]
            if known:   # a trial that has not reported yet is taken to last as long as the others
                per_trial = sum(now - r.started + e for r, e in known) / len(known)
                etas = [r.eta(now) if r.eta(now) is not None else max(0.0, per_trial - (now - r.started))
                        for r in runs]
                after = max(0, left - len(runs))
                candidates.append(max(etas) + math.ceil(after / len(runs)) * per_trial)
        return min(candidates) if candidates else None

    def position(self) -> str:
        n = self.done + self.finished
        return f"{n}/{self.total}" if self.total is not None else str(n)

    def best_text(self) -> str:
        if len(self.directions) > 1:
            return f"pareto={len(self.pareto)}"
        if self.best is None:
            return "best=-"
        return f"best={format_value(self.best.values[0])} (#{self.best.number})"

    def started_line(self, run: _Running) -> str:
        """``started #3 on slot 1: lr=0.0003 top_k=2``."""
        params = " ".join(f"{k}={format_value(v)}" for k, v in run.params.items())
        return _one_line(f"started #{run.number} on slot {run.slot}: {params}", 160)

    def reported_line(self, run: _Running) -> str:
        """``#3 step 50/600 val_loss=1.234 eta 02:10``."""
        metrics = " ".join(f"{k}={format_value(v)}" for k, v in run.metrics.items()
                           if isinstance(v, (int, float, str)))
        return _one_line(f"#{run.number} step {run.step_text()} {metrics} "
                         f"eta {format_duration(run.eta(self._clock()))}", 160)

    def values_text(self, trial: FrozenTrial) -> str:
        if is_out_of_memory(trial):
            reached = (trial.user_attrs.get("metrics") or {}).get("peak_mem_mb")
            return "infeasible" + (f" at peak_mem_mb={format_value(reached)}" if reached else "")
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            return " ".join(f"{m}={format_value(v)}" for m, v in zip(self.metrics, trial.values))
        if trial.state == TrialState.PRUNED and trial.intermediate_values:
            step = max(trial.intermediate_values)
            return f"at step {step} {self.metrics[0]}={format_value(trial.intermediate_values[step])}"
        if is_interrupted(trial):
            return f"by {trial.user_attrs.get(INTERRUPTED_BY_ATTR, '?')}, re-queued"
        reason = trial.user_attrs.get("fail_reason")
        return f"reason={_one_line(reason)}" if reason else ""

    def finished_line(self, trial: FrozenTrial) -> str:
        """``trial 3/10 (#2) COMPLETE val_loss=0.4123 best=0.395 (#1) elapsed 00:42 eta 01:10``."""
        parts = [f"trial {self.position()} (#{trial.number}) {_state_label(trial)}", self.values_text(trial),
                 self.best_text(), f"elapsed {format_duration(self.elapsed())}",
                 f"eta {format_duration(self.eta())}"]
        return " ".join(p for p in parts if p)

    @abc.abstractmethod
    def _show_finished(self, line: str) -> None:
        """Show one finished trial's line (``finished_line``)."""

    def _show_event(self, line: str | None) -> None:
        """Show a trial's start or report line (the live view shows these in its table instead)."""


def _state_label(trial: FrozenTrial) -> str:
    """The state name, except INTERRUPTED for a trial that a stop cut short (stored as FAIL)."""
    if is_out_of_memory(trial):
        return "OUT OF MEMORY"
    return "INTERRUPTED" if is_interrupted(trial) else trial.state.name


def _one_line(text: Any, width: int = 120) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[: width - 1] + "…"


class PlainProgress(Progress):
    """One log line per finished trial (and one at start/close): for CI logs and files."""

    def __init__(self, file: TextIO | None = None, clock=time.monotonic, steps: int | None = None) -> None:
        super().__init__(clock, steps)
        self._file = file
        self._closed = False

    def _print(self, line: str) -> None:
        print(line, file=self._file or sys.stdout, flush=True)

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        budget = [f"{self.total - self.done} trials" if self.total is not None else "",
                  f"timeout {format_duration(self.timeout_s)}" if self.timeout_s is not None else ""]
        budget_text = ", ".join(b for b in budget if b) or "no budget"
        self._print(f"study {self.study_name}: {', '.join(self.metrics)} "
                    f"({', '.join(self.directions)}); {self.done} done, running {budget_text}")

    def _show_finished(self, line: str) -> None:
        self._print(line)

    def _show_event(self, line: str | None) -> None:
        if line is not None:
            self._print(line)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            notes = [f"{self.counts[k]} {label}" for k, label in (("FAIL", "failed"),
                     ("INTERRUPTED", "interrupted and re-queued")) if self.counts.get(k)]
            self._print(f"finished {sum(self.counts.values())} trials in {format_duration(self.elapsed())}"
                        + (f" ({', '.join(notes)})" if notes else ""))


class LiveProgress(Progress):
    """A rich Live view that refreshes a few times a second; finished trials scroll above it."""

    def __init__(self, console: Console | None = None, clock=time.monotonic,
                 refresh_per_second: float = 4, steps: int | None = None) -> None:
        super().__init__(clock, steps)
        self.console = console or Console()
        self._live = Live(console=self.console, get_renderable=self._render, transient=False,
                          refresh_per_second=refresh_per_second, redirect_stdout=False,
                          redirect_stderr=False)
        self._live_started = False

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        if not self._live_started:
            self._live.start()
            self._live_started = True

    def _show_finished(self, line: str) -> None:
        self.console.print(Text(line))

    def notice(self, text: str) -> None:
        if not self._live_started:
            super().notice(text)
        else:                 # printed through the console, which keeps the live view below it
            self.console.print(Text(text, style="yellow"))

    def refresh(self) -> None:
        if self._live_started:
            self._live.refresh()

    def close(self) -> None:
        if self._live_started:
            self._live_started = False
            self._live.stop()

    def _render(self) -> Group:
        with self._lock:
            return Group(self._header(), self._running_table())

    def _header(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        n = self.done + self.finished
        bar_total = self.total if self.total else None
        completed = n if bar_total else 0
        grid.add_row(Text(self.study_name, style="bold"),
                     ProgressBar(total=bar_total, completed=completed, width=30),
                     Text(f"trial {self.position()}"),
                     Text(f"elapsed {format_duration(self.elapsed())}", style="cyan"),
                     Text(f"eta {format_duration(self.eta())}", style="cyan"),
                     Text(self.best_text(), style="green"))
        return grid

    def _running_table(self) -> Table:
        metrics = self.metrics[:3]     # each objective's latest value (the first three)
        table = Table(title=None, show_edge=False, expand=False, header_style="bold")
        for col in ("slot", "trial", "step", *metrics, "running", "eta", "params"):
            table.add_column(col, no_wrap=col != "params", overflow="ellipsis")
        now = self._clock()
        for run in sorted(self.running.values(), key=lambda r: r.slot):
            params = " ".join(f"{k}={format_value(v)}" for k, v in run.params.items())
            latest = [_current(run.metrics, m) if i == 0 else format_value(run.metrics.get(m, "-"))
                      for i, m in enumerate(metrics)]
            table.add_row(run.slot, str(run.number), run.step_text(), *latest,
                          format_duration(now - run.started), format_duration(run.eta(now)),
                          _one_line(params, 80))
        return table


def _current(metrics: dict[str, Any], metric: str) -> str:
    """The objective's latest value, else the first reported metric by name, else ``-``."""
    if metric in metrics:
        return format_value(metrics[metric])
    if metrics:
        name, value = next(iter(metrics.items()))
        return f"{name}={format_value(value)}"
    return "-"


def make_progress(live: bool | None = None, *, console: Console | None = None,
                  steps: int | None = None) -> Progress:
    """The live view when ``live`` (default: stdout is a terminal), plain log lines otherwise.
    ``steps``: a trial's total steps (the trainer's ``steps``), for the trials' ETAs."""
    if live is None:
        live = sys.stdout.isatty()
    return LiveProgress(console=console, steps=steps) if live else PlainProgress(steps=steps)


def print_summary(study: optuna.Study, storage_label: str, *, console: Console | None = None) -> None:
    """The final table: best trial (or Pareto front), counts by state, where the store is."""
    console = console or Console()
    trials = study.get_trials(deepcopy=False)
    counts = outcome_counts(trials)
    names = objective_names(study)
    directions = [_direction_name(d) for d in study.directions]

    table = Table(title=f"study {study.study_name}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("objectives", ", ".join(f"{n} ({d})" for n, d in zip(names, directions)))
    table.add_row("trials", describe(counts) if counts else "none")
    table.add_row("store", storage_label)
    if not counts.get("complete"):
        table.add_row("best", "no completed trial")
    elif len(directions) == 1 and not any(is_feasible(t) for t in trials
                                          if t.state == TrialState.COMPLETE):
        table.add_row("best", "no feasible complete trial (constraints, out of memory)")
    elif len(directions) == 1:
        _add_trial_rows(table, study.best_trial, names)
    else:
        table.add_row("pareto front", f"{len(study.best_trials)} trials")
    console.print(table)
    if len(directions) > 1 and counts.get("complete"):
        console.print(_pareto_table(study.best_trials, names, directions))
    for line in edge_notes(trials, study.directions):
        console.print(f"note: {line}", markup=False, highlight=False)


def _key_metrics(trial: FrozenTrial, exclude: Sequence[str]) -> str:
    metrics = trial.user_attrs.get("metrics")
    if not isinstance(metrics, dict):
        return ""
    return " ".join(f"{k}={format_value(metrics[k])}" for k in KEY_METRICS
                    if k in metrics and k not in exclude)


def _add_trial_rows(table: Table, trial: FrozenTrial, names: Sequence[str]) -> None:
    table.add_row("best trial", f"#{trial.number}")
    table.add_row("values", " ".join(f"{n}={format_value(v)}" for n, v in zip(names, trial.values)))
    table.add_row("params", " ".join(f"{k}={format_value(v)}" for k, v in trial.params.items()))
    metrics = _key_metrics(trial, names)
    if metrics:
        table.add_row("metrics", metrics)


def _pareto_table(best: list[FrozenTrial], names: Sequence[str], directions: Sequence[str],
                  limit: int = 10) -> Table:
    table = Table(title=f"pareto front ({len(best)} trials, first {min(limit, len(best))} shown)",
                  title_justify="left")
    table.add_column("trial")
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("params")
    sign = 1.0 if directions[0] == "minimize" else -1.0
    for t in sorted(best, key=lambda t: sign * t.values[0])[:limit]:
        table.add_row(f"#{t.number}", *(format_value(v) for v in t.values),
                      " ".join(f"{k}={format_value(v)}" for k, v in t.params.items()))
    return table
