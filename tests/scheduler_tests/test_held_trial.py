"""A claimed wide trial held until its width is free (issue 21 item 2), through the real loop:
it is released, not run, when the budget's timeout or Ctrl-C / SIGTERM comes while it waits,
and narrow trials claimed after it never start before it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.outcomes import RERUN_OF_ATTR
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import helpers
from scheduler_tests.width_objectives import WIDTH, WaitsForTheWideTrial, started_order, suggest_width

REPO = Path(__file__).resolve().parents[2]
TWO_UNITS = ParallelSpec(gpus=0, workers=2, searched_width=WIDTH, widest=2, heartbeat_interval=1)


def _study(url: str, name: str, widths: list[int]) -> optuna.Study:
    """A study whose trials ``x = 0, 1, ...`` have these widths, in this order."""
    study = store.create_or_load_study(store.open_storage(url), name, ["minimize"],
                                       pruner=optuna.pruners.NopPruner())
    for x, width in enumerate(widths):
        study.enqueue_trial({"x": x, WIDTH: width})
    return study


def _run(study, url, objective, budget) -> scheduler.RunResult:
    return scheduler.run_study(study, storage_url=url, suggest=suggest_width, objective=objective,
                               parallel=TWO_UNITS, budget=budget)


def _by_x(url: str, name: str) -> dict[int, list[optuna.trial.FrozenTrial]]:
    by_x: dict[int, list] = {}
    for trial in helpers.trials(url, name):
        label = trial.params.get("x", trial.system_attrs.get("fixed_params", {}).get("x"))
        by_x.setdefault(label, []).append(trial)   # an enqueued trial's x is fixed, not yet a param
    return by_x


def test_the_timeout_releases_a_held_trial_uncounted_and_a_rerun_starts_it_first(sqlite_url, tmp_path):
    # Trial 0 (width 1) runs until trial 1 (width 2, held: one unit free) is released.
    for timeout in (4, 12, 36):   # a loaded machine may not claim trial 1 within 4 s: then longer
        name, log = f"held-{timeout}", str(tmp_path / f"started-{timeout}")
        study = _study(sqlite_url, name, [1, 2, 1])
        objective = WaitsForTheWideTrial(sqlite_url, name, log, until_released=True,
                                         give_up_s=timeout)
        result = _run(study, sqlite_url, objective, BudgetSpec(timeout_s=timeout))
        if _by_x(sqlite_url, name)[1][0].state != TrialState.WAITING:
            break   # trial 1 was claimed before the timeout
    assert result.stopped_by == "timeout" and not result.interrupted
    assert (result.completed, result.failed, result.interrupted_trials) == (1, 0, 1)
    first, wide = _by_x(sqlite_url, name)[0][0], _by_x(sqlite_url, name)[1]
    held, copy = wide
    assert held.state == TrialState.FAIL and held.user_attrs["stop_reason"] == "interrupted"
    assert held.user_attrs["interrupted_by"] == "timeout" and "fail_reason" not in held.user_attrs
    assert held.user_attrs["slot_seconds"] == held.user_attrs["gpu_seconds"] == 0.0
    assert "slot" not in held.user_attrs                       # it never started
    assert result.gpu_seconds == pytest.approx(first.user_attrs["gpu_seconds"], abs=0.01)
    assert copy.state == TrialState.WAITING and copy.system_attrs[RERUN_OF_ATTR] == held.number
    assert copy.params == held.params
    assert started_order(log) == [0]                          # trial 2 was never claimed

    rerun = _run(study, sqlite_url, objective, BudgetSpec(trials=3))
    assert rerun.stopped_by == "trials" and rerun.completed == 2
    assert started_order(log) == [0, 1, 2]                    # the held trial first, then the queue
    (ran,) = [t for t in _by_x(sqlite_url, name)[1] if t.state == TrialState.COMPLETE]
    assert ran.number == copy.number and ran.user_attrs["slots"] == [0, 1]


def test_a_wide_trial_queued_behind_narrow_ones_starts_before_any_trial_claimed_after_it(
        sqlite_url, tmp_path):
    # Trial 0 holds one unit until trial 1 (width 2) is claimed; trials 2.. would fit the free unit.
    log = str(tmp_path / "started")
    widths = [1, 2, 1, 1, 1, 2, 1]
    study = _study(sqlite_url, "starve", widths)
    result = _run(study, sqlite_url, WaitsForTheWideTrial(sqlite_url, "starve", log),
                  BudgetSpec(trials=len(widths)))
    assert result.completed == len(widths) and result.failed == 0
    order = started_order(log)
    assert order.index(1) < min(order.index(x) for x in range(2, len(widths))), order
    for x, (trial,) in _by_x(sqlite_url, "starve").items():
        assert len(trial.user_attrs.get("slots", [trial.user_attrs["slot"]])) == widths[x]
        assert trial.user_attrs["gpu_seconds"] == pytest.approx(
            widths[x] * trial.user_attrs["slot_seconds"], abs=0.01)


def _cli_study(tmp_path: Path) -> tuple[Path, str]:
    """``autotune run``'s study: trial 0 (width 1) runs until cut, trial 1 (width 2) is held."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    doc = {"study": "held", "storage": url,
           "space": {"x": {"type": "int", "low": 0, "high": 9},
                     WIDTH: {"type": "categorical", "choices": [1, 2]}},
           "objectives": [{"metric": "val_loss", "direction": "minimize"}],
           "optimizer": {"kind": "random", "seed": 0}, "budget": {"trials": 4},
           "parallel": {"workers": 2, "fit_cores": False},
           "objective": "tests.scheduler_tests.width_objectives:runs_while_held",
           "trainer": {"started": str(tmp_path / "started")}}
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _study(url, "held", [1, 2])
    return path, url


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_autotune_run_releases_a_held_trial_and_exits_130(tmp_path, sig):
    path, url = _cli_study(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "autotune", "run", str(path), "--no-live"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        helpers.wait_until(lambda: proc.poll() is not None or (
            (tmp_path / "started").exists()
            and _by_x(url, "held")[1][0].state == TrialState.RUNNING), timeout=120)
        assert proc.poll() is None, proc.communicate()[0]
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)     # as a terminal does: the whole process group
        else:
            os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    by_x = _by_x(url, "held")
    (cut, cut_copy), (held, held_copy) = by_x[0], by_x[1]
    for trial, copy in ((cut, cut_copy), (held, held_copy)):
        assert trial.state == TrialState.FAIL and trial.user_attrs["stop_reason"] == "interrupted"
        assert trial.user_attrs["interrupted_by"] == sig.name
        assert copy.state == TrialState.WAITING and copy.params == trial.params
        assert copy.system_attrs[RERUN_OF_ATTR] == trial.number
    assert held.user_attrs["slot_seconds"] == held.user_attrs["gpu_seconds"] == 0.0
    assert "slot" not in held.user_attrs
    assert held_copy.number < cut_copy.number     # the next run pops the oldest copy: the held trial
