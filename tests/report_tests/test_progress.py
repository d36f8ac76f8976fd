"""The run view: plain log lines off a terminal, a rich live view on one, and the final summary."""
from __future__ import annotations

import io
import re

import optuna
import pytest

from optuna.trial import TrialState
from rich.console import Console

from autotune import progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_through(view: progress.Progress, study, clock: FakeClock, n: int = 6) -> None:
    view.start(study.study_name, study.directions, progress.objective_names(study), total=n, done=0,
               timeout_s=None)
    for trial in study.trials[:n]:
        view.trial_started(trial.number, f"gpu{trial.number % 2}", trial.params)
        for step, value in trial.intermediate_values.items():
            view.trial_reported(trial.number, step, {"val_loss": value})
        clock.now += 10.0
        view.trial_finished(trial)
    view.close()


def test_plain_mode_prints_one_line_per_finished_trial_with_best_elapsed_and_eta(single_study):
    out, clock = io.StringIO(), FakeClock()
    view = progress.PlainProgress(file=out, clock=clock)
    run_through(view, single_study, clock)
    lines = out.getvalue().splitlines()
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 6
    first = trial_lines[0]
    t0 = single_study.trials[0]
    assert first.startswith("trial 1/6 (#0) COMPLETE val_loss=")
    assert f"best={progress.format_value(t0.value)} (#0)" in first
    assert "elapsed 00:10 eta 00:50" in first
    assert trial_lines[-1].endswith("elapsed 01:00 eta 00:00")
    assert lines[0].startswith("study single: val_loss (minimize)")
    assert lines[-1] == "finished 6 trials in 01:00"


def test_plain_mode_names_the_state_and_reason_of_pruned_and_failed_trials(single_study):
    out, clock = io.StringIO(), FakeClock()
    view = progress.PlainProgress(file=out, clock=clock)
    view.start("single", ["minimize"], ["val_loss"], total=None, done=0, timeout_s=600)
    failed = next(t for t in single_study.trials if t.state == TrialState.FAIL)
    pruned = next(t for t in single_study.trials if t.state == TrialState.PRUNED)
    view.trial_finished(failed)
    view.trial_finished(pruned)
    lines = out.getvalue().splitlines()
    # a FAIL is retried by the scheduler, so it does not advance the count the budget is in
    assert re.match(rf"trial 0 \(#{failed.number}\) FAIL reason=.+ best=- elapsed 00:00 eta 10:00", lines[1])
    last_step = max(pruned.intermediate_values)
    assert lines[2].startswith(f"trial 1 (#{pruned.number}) PRUNED at step {last_step} val_loss=")


def test_plain_mode_prints_each_start_and_reports_at_most_every_30_s_with_the_trials_eta():
    out, clock = io.StringIO(), FakeClock()
    view = progress.PlainProgress(file=out, clock=clock, steps=100)
    view.start("s", ["minimize"], ["val_loss"], total=4)
    view.trial_started(3, 1, {"lr": 3e-4})
    for step in range(0, 100, 10):        # a report every 5 s: 10 steps per 5 s
        clock.now += 5.0
        view.trial_reported(3, step, {"val_loss": 1.0 / (step + 1)})
    lines = out.getvalue().splitlines()[1:]
    assert lines[0] == "started #3 on slot 1: lr=0.0003"
    reports = [line for line in lines if line.startswith("#3 step")]
    assert reports[0] == "#3 step 0/100 val_loss=1 eta 08:20"    # 5 s for step 0: 100 steps at 5 s
    assert reports[1] == "#3 step 60/100 val_loss=0.01639 eta 00:20"   # 30 s later: 0.5 s a step
    assert len(reports) == 2


def test_study_eta_before_any_trial_finished_comes_from_the_running_trials_step_rates():
    clock = FakeClock()
    view = progress.PlainProgress(file=io.StringIO(), clock=clock, steps=100)
    view.start("s", ["minimize"], ["val_loss"], total=4)
    assert view.eta() is None
    for n in (0, 1):
        view.trial_started(n, n, {})
    clock.now = 10.0
    for n in (0, 1):
        view.trial_reported(n, 0, {"val_loss": 1.0})
    clock.now = 20.0
    for n in (0, 1):
        view.trial_reported(n, 50, {"val_loss": 0.5})
    # each: 0.2 s a step, 50 steps left = 10 s, 30 s a trial; then the other 2 trials on 2 slots
    assert view.eta() == pytest.approx(10.0 + 30.0)
    view.trial_started(2, 2, {})   # no report yet: taken to last 30 s like the others
    assert view.eta() == pytest.approx(30.0 + 30.0)


def test_an_interrupted_trial_is_named_so_and_not_counted_as_failed(single_study):
    out = io.StringIO()
    view = progress.PlainProgress(file=out, clock=FakeClock())
    view.start("single", ["minimize"], ["val_loss"], total=10)
    cut = optuna.trial.create_trial(state=TrialState.FAIL,
                                    user_attrs={"stop_reason": "interrupted", "interrupted_by": "SIGINT"})
    view.trial_finished(cut)
    view.close()
    lines = out.getvalue().splitlines()
    assert "INTERRUPTED by SIGINT, re-queued" in lines[1]
    assert lines[-1] == "finished 1 trials in 00:00 (1 interrupted and re-queued)"


def test_best_so_far_follows_the_direction_and_pareto_front_for_several_objectives(multi_study):
    view = progress.PlainProgress(file=io.StringIO(), clock=FakeClock())
    view.start("multi", ["minimize", "minimize"], ["val_loss", "latency_ms"], total=40)
    for t in multi_study.trials:
        view.trial_finished(t)
    assert {t.number for t in view.pareto} == {t.number for t in multi_study.best_trials}
    assert view.best_text() == f"pareto={len(multi_study.best_trials)}"


def test_live_mode_renders_running_trials_and_progress(single_study):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=140, color_system=None)
    clock = FakeClock()
    view = progress.LiveProgress(console=console, clock=clock, refresh_per_second=20, steps=600)
    view.start("single", ["minimize"], ["val_loss"], total=10, done=2, timeout_s=None)
    view.trial_started(7, "gpu1", {"lr": 3e-4, "top_k": 2})
    clock.now = 65.0
    view.trial_reported(7, 150, {"val_loss": 1.25})
    view.refresh()
    text = buf.getvalue()
    assert "trial 2/10" in text and "elapsed 01:05" in text
    assert re.search(r"gpu1\s+.*7\s+.*150/600\s+.*1\.25\s+.*01:05\s+.*03:14", text)   # 65 s for steps 0-150: 450 more
    view.trial_finished(single_study.trials[0])
    view.close()
    view.close()
    assert "trial 3/10 (#0) COMPLETE" in buf.getvalue()


def test_make_progress_picks_plain_lines_when_not_a_terminal(capsys):
    assert isinstance(progress.make_progress(), progress.PlainProgress)   # pytest captures stdout
    assert isinstance(progress.make_progress(live=True, console=Console(file=io.StringIO())),
                      progress.LiveProgress)


def test_summary_shows_best_trial_counts_and_store(single_study):
    buf = io.StringIO()
    progress.print_summary(single_study, "sqlite:///studies.db", console=Console(file=buf, width=200))
    text = buf.getvalue()
    best = single_study.best_trial
    counts = {s: sum(t.state == s for t in single_study.trials) for s in TrialState}
    assert f"#{best.number}" in text
    assert f"val_loss={progress.format_value(best.value)}" in text
    assert f"{counts[TrialState.COMPLETE]} complete" in text and f"{counts[TrialState.FAIL]} failed" in text
    assert "sqlite:///studies.db" in text and "expert_load_cv=" in text


def test_summary_of_several_objectives_gives_the_pareto_front_size(multi_study):
    buf = io.StringIO()
    progress.print_summary(multi_study, "db", console=Console(file=buf, width=200))
    assert f"pareto front ({len(multi_study.best_trials)} trials" in buf.getvalue()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_objective_names_come_from_the_study_or_the_trials_metrics(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'n.db'}", directions=["minimize"] * 2)
    assert progress.objective_names(study) == ["value0", "value1"]
    study.add_trial(optuna.trial.create_trial(
        values=[0.5, 3.0], user_attrs={"metrics": {"val_loss": 0.5, "accuracy": 0.9, "latency_ms": 3.0}}))
    assert progress.objective_names(study) == ["val_loss", "latency_ms"]
    study.set_metric_names(["loss", "ms"])
    assert progress.objective_names(study) == ["loss", "ms"]
