"""The ``autotune`` command as a user meets it: exit codes, messages, what lands in the store."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner

from autotune.cli import main
from autotune.store import open_storage

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["run", "worker", "validate", "status", "best", "export", "report", "dashboard"]


def user_study(tmp_path: Path, *, trials: int = 4, objective: str = "tests.user_objectives:quadratic",
               name: str = "quad", extra: dict | None = None, **trainer) -> Path:
    doc = {
        "study": name,
        "storage": f"sqlite:///{tmp_path / 'store.db'}",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0},
                  "kind": {"type": "categorical", "choices": ["a", "b"]}},
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "optimizer": {"kind": "random", "seed": 0},
        "budget": {"trials": trials},
        "parallel": {"workers": 2, "heartbeat_interval": 1, "grace_period": 3},
        "objective": objective,
        "trainer": {"steps": 4, **trainer},
    }
    doc.update(extra or {})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def trials_of(tmp_path: Path, name: str = "quad"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'store.db'}").get_trials()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_validate_good_file():
    result = invoke("validate", str(REPO / "studies" / "quickstart.yaml"))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "val_loss" in result.output


def test_validate_shows_parallel_and_warm_start(tmp_path):
    path = user_study(tmp_path, extra={
        "parallel": {"gpus": [0, 1], "trials_per_gpu": 2},
        "warm_start": {"from": ["old", "older"], "strategy": "enqueue", "top_k": 3}})
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "parallel   GPUs 0,1, 2 trial(s) per GPU" in result.output
    assert "warm start enqueue from old, older, best 3 of each; out of range: clip" in result.output


def test_validate_bad_file_exits_2_with_one_message(tmp_path):
    path = user_study(tmp_path, extra={"budget": {"trials": -1}})
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: budget.trials: must be > 0" in result.output
    assert "Traceback" not in result.output


def test_bad_warm_start_exits_2_naming_file_key_and_problem(tmp_path):
    path = user_study(tmp_path, extra={"warm_start": {"from": ["old"], "strategy": "prior",
                                                      "local_trials": 9}})
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {path}: warm_start.local_trials: only strategy local "
                                     "uses it (this file's strategy: prior)")


def test_bad_study_writes_nothing_to_the_store(tmp_path):
    path = user_study(tmp_path, extra={"optimizer": {"kind": "bogus"}})
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert "optimizer.kind" in result.output
    assert not (tmp_path / "store.db").exists()


def test_storage_that_cannot_be_opened_exits_2(tmp_path):
    path = user_study(tmp_path)
    result = CliRunner().invoke(main, ["run", str(path), "--storage", f"sqlite:///{tmp_path}/no/such/dir/x.db"])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_unreachable_database_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["status", "--storage", "postgresql://nobody:secret@127.0.0.1:1/x"])
    assert result.exit_code == 2
    assert "cannot be opened" in result.output
    assert "secret" not in result.output  # the password is masked


def test_run_then_resume_with_a_larger_budget(tmp_path):
    path = user_study(tmp_path, trials=3)
    result = invoke("run", str(path))
    assert result.exit_code == 0, result.output
    first = trials_of(tmp_path)
    assert len([t for t in first if t.state.name == "COMPLETE"]) == 3
    result = invoke("run", str(path), "--trials", "5")
    assert result.exit_code == 0, result.output
    second = trials_of(tmp_path)
    assert len([t for t in second if t.state.name == "COMPLETE"]) == 5
    assert [t.params for t in second[:3]] == [t.params for t in first]  # nothing lost or redone
    assert second[0].user_attrs["metrics"]["val_loss"] == pytest.approx(second[0].value)


def test_status_best_and_export(tmp_path):
    path = user_study(tmp_path, trials=3)
    assert invoke("run", str(path)).exit_code == 0
    url = f"sqlite:///{tmp_path / 'store.db'}"

    status = invoke("status", "--storage", url)
    assert status.exit_code == 0 and "quad: 3 trials (3 complete)" in status.output

    best_yaml = invoke("best", "quad", "--storage", url)
    assert best_yaml.exit_code == 0
    params = yaml.safe_load(best_yaml.output)
    study = optuna.load_study(study_name="quad", storage=url)
    assert params == study.best_params
    best_json = json.loads(invoke("best", "quad", "--storage", url, "--json").output)
    assert best_json["params"] == study.best_params and best_json["values"]["val_loss"] == study.best_value

    rows = json.loads(invoke("export", "quad", "--storage", url, "--format", "json").output)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert rows[0]["params"].keys() == {"x", "kind"}
    table = list(csv.DictReader(io.StringIO(invoke("export", "quad", "--storage", url).output)))
    assert len(table) == 3 and float(table[0]["value.val_loss"]) == rows[0]["values"]["val_loss"]


@pytest.mark.parametrize("strategy", ["enqueue", "prior"])
def test_run_with_warm_start_and_status_says_from_what(tmp_path, strategy):
    assert invoke("run", str(user_study(tmp_path, trials=4, name="old"))).exit_code == 0
    extra = {"warm_start": {"from": ["old"], "strategy": strategy},
             "optimizer": {"kind": "tpe", "seed": 1}}
    result = invoke("run", str(user_study(tmp_path, trials=5, name="new", extra=extra)))
    assert result.exit_code == 0, result.output
    url = f"sqlite:///{tmp_path / 'store.db'}"
    status = invoke("status", "--storage", url).output
    # enqueue: the old study's 4 configurations re-run first, then 1 sampled; prior: 5 sampled
    # with the 4 old trials in the model, not among the study's own trials
    assert f"warm-started ({strategy}) from old (4 trials)" in status
    assert "new: 5 trials (5 complete)" in status
    assert "old: 4 trials (4 complete)" in status           # the source is untouched
    new = trials_of(tmp_path, "new")
    old_params = [t.params for t in trials_of(tmp_path, "old")]
    rerun = [t.params for t in new if t.params in old_params]
    assert len(rerun) == (4 if strategy == "enqueue" else 0)


def test_env_storage_is_used_by_status(tmp_path, monkeypatch):
    path = user_study(tmp_path, trials=1)
    assert invoke("run", str(path)).exit_code == 0
    monkeypatch.setenv("AUTOTUNE_STORAGE", f"sqlite:///{tmp_path / 'store.db'}")
    assert "quad: 1 trials" in invoke("status").output


def test_reading_commands_never_create_a_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    status = CliRunner().invoke(main, ["status", "--storage", url])
    assert status.exit_code == 0 and "no studies yet" in status.output
    for args in (["best", "quad"], ["export", "quad"], ["report", "quad"], ["dashboard"]):
        result = CliRunner().invoke(main, [*args, "--storage", url])
        assert result.exit_code == 2 and "no study store at" in result.output, args
    assert not (tmp_path / "none.db").exists()


def test_unknown_study_names_the_ones_there(tmp_path):
    path = user_study(tmp_path, trials=1)
    assert invoke("run", str(path)).exit_code == 0
    result = CliRunner().invoke(main, ["best", "nope", "--storage", f"sqlite:///{tmp_path / 'store.db'}"])
    assert result.exit_code == 2 and "studies there: quad" in result.output


def test_objective_that_omits_the_metric_fails_its_trials_with_that_message(tmp_path):
    # a budget above the failure streak, so that both workers claim trials back to back
    path = user_study(tmp_path, trials=50, objective="tests.user_objectives:omits_metric")
    result = CliRunner().invoke(main, ["run", str(path), "--timeout", "60s"])
    assert result.exit_code == 1
    failed = trials_of(tmp_path)
    assert failed and all(t.state.name == "FAIL" for t in failed)
    assert "did not return metric 'val_loss'" in failed[0].user_attrs["fail_reason"]


def test_worker_needs_an_existing_study(tmp_path):
    path = user_study(tmp_path)
    result = CliRunner().invoke(main, ["worker", str(path)])
    assert result.exit_code == 2 and "autotune run" in result.output


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autotune", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_real_subprocess_exit_codes(tmp_path):
    good = user_study(tmp_path, trials=2)
    proc = _cli("run", str(good), "--no-live")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    bad = user_study(tmp_path, name="bad", extra={"space": {"x": {"type": "float", "low": 2, "high": 1}}})
    proc = _cli("run", str(bad))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "space.x.low" in out and "Traceback" not in out


def test_sigkill_of_the_run_then_resume_loses_no_finished_trial(tmp_path):
    # The objective lets two trials finish and holds the next two RUNNING until released, so the
    # run is killed at a known state, whatever the machine's load.
    gate = tmp_path / "gate"
    gate.mkdir()
    path = user_study(tmp_path, trials=6, objective="tests.user_objectives:first_two_then_wait",
                      gate=str(gate))
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "autotune", "run", str(path), "--no-live"], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"sqlite:///{tmp_path / 'store.db'}"

    def states():
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "run.log").read_text())
        try:
            # through the store, which creates a fresh file's tables under its lock (a plain
            # Optuna open would race the run's own table creation)
            trials = optuna.load_study(study_name="quad", storage=open_storage(url)).get_trials()
        except Exception:  # noqa: BLE001 - the store is still being created
            return []
        return sorted(t.state.name for t in trials)

    deadline = time.monotonic() + 300    # a bound for a broken run only; the wait is on state
    while states() != ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]:
        assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
        time.sleep(0.2)
    done_before = {t.number: t.params for t in trials_of(tmp_path) if t.state.name == "COMPLETE"}
    stranded = {t.number for t in trials_of(tmp_path) if t.state.name == "RUNNING"}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    log.close()

    (gate / "release").touch()
    result = invoke("run", str(path))   # fails the stranded trials once their heartbeats are stale
    assert result.exit_code == 0, result.output
    trials = {t.number: t for t in trials_of(tmp_path)}
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 6
    assert {n: trials[n].params for n in done_before} == done_before        # nothing finished was lost
    for n in stranded:                     # failed for their dead scheduler, then run again
        assert trials[n].state.name == "FAIL"
        assert "no heartbeat" in trials[n].user_attrs["fail_reason"]
        assert [t.params for t in trials.values() if t.system_attrs.get("failed_trial") == n] == \
            [trials[n].params]
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials.values())


@pytest.mark.postgres
def test_study_in_postgresql(tmp_path, pg_url):
    name = f"quad-{uuid.uuid4().hex[:8]}"
    path = user_study(tmp_path, trials=3, name=name)
    result = CliRunner().invoke(main, ["run", str(path), "--storage", pg_url])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=name, storage=pg_url)
    assert len([t for t in study.get_trials() if t.state.name == "COMPLETE"]) == 3
    optuna.delete_study(study_name=name, storage=pg_url)
