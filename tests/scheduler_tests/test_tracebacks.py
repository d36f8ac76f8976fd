"""A failed trial's traceback: one line on the terminal by default, the full text with ``-v``
(the ``autotune`` logger at INFO), and always on the trial as the user attr ``traceback``."""
from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.scheduler import loop, policies
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers, objectives


def _run_raising_trial(url: str, name: str) -> optuna.trial.FrozenTrial:
    study = store.create_or_load_study(
        store.open_storage(url), name, ["minimize"],
        sampler=optuna.samplers.PartialFixedSampler({"x": 0}, optuna.samplers.RandomSampler()))
    study.enqueue_trial({"x": 1})                # x=1 raises "boom from the objective"
    scheduler.run_study(study, storage_url=url, suggest=objectives.suggest_kind,
                        objective=objectives.Behaves(url, name),
                        parallel=ParallelSpec(gpus=0, workers=1), budget=BudgetSpec(trials=1))
    (failed,) = [t for t in helpers.trials(url, name) if t.state == TrialState.FAIL]
    return failed


def test_a_failed_trial_prints_one_line_and_stores_its_traceback(sqlite_url, capfd, caplog):
    caplog.set_level(logging.WARNING, logger="autotune")
    failed = _run_raising_trial(sqlite_url, "quiet")

    err = capfd.readouterr().err                 # the worker process's stderr too
    assert "Traceback" not in err and "boom" not in err
    lines = [r.getMessage() for r in caplog.records if "boom" in r.getMessage()]
    assert lines == [f"trial {failed.number} failed: RuntimeError: boom from the objective"]
    stored = failed.user_attrs["traceback"]
    assert stored.startswith("Traceback (most recent call last):")
    assert "objectives.py" in stored and stored.rstrip().endswith("RuntimeError: boom from the objective")


def test_with_verbose_the_traceback_is_shown_too(sqlite_url, caplog):
    caplog.set_level(logging.INFO, logger="autotune")      # what `autotune -v` sets
    failed = _run_raising_trial(sqlite_url, "verbose")
    shown = [r.getMessage() for r in caplog.records if "Traceback" in r.getMessage()]
    assert shown == [f"trial {failed.number}: {failed.user_attrs['traceback'].rstrip()}"]


def test_a_long_traceback_keeps_its_end_within_twenty_kilobytes():
    text = "Traceback (most recent call last):\n" + "  frame\n" * 10_000 + "RecursionError: deep\n"
    kept = loop.stored_traceback(text)
    assert len(kept) <= loop.TRACEBACK_MAX_CHARS + 40
    assert kept.startswith(f"[{len(text) - loop.TRACEBACK_MAX_CHARS} characters cut]")
    assert kept.endswith("RecursionError: deep\n")
    assert loop.stored_traceback("short\n") == "short\n"


def test_autotune_run_prints_one_line_per_failed_trial_and_no_traceback(tmp_path, capfd, caplog):
    from click.testing import CliRunner

    from autotune.cli import main
    path = tmp_path / "s.yaml"
    path.write_text(f"study: tb\nstorage: sqlite:///{tmp_path / 'store.db'}\n"
                    "space: {x: {type: float, low: 0.0, high: 1.0}}\n"
                    "objectives: [{metric: val_loss, direction: minimize}]\n"
                    "budget: {trials: 1}\nparallel: {workers: 1}\n"
                    "objective: tests.user_objectives:raises\n")
    result = CliRunner().invoke(main, ["run", str(path), "--no-live", "--no-estimate"])
    out = result.output + capfd.readouterr().err     # output: what click printed, both streams
    assert result.exit_code == 1                    # trial after trial failed on its own
    assert "Traceback" not in out
    failed_lines = [line for line in out.splitlines() if "boom from the user's objective" in line]
    assert len(failed_lines) == policies.FAILURE_STREAK    # one line each
    assert all(" FAIL reason=RuntimeError: " in line for line in failed_lines)
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and "boom" in r.getMessage()]
    assert not logged            # the progress line says it; the log repeats it only with -v
