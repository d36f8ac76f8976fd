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
PG_URL = os.environ.get("AUTOTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
COMMANDS = ["run", "worker", "validate", "status", "best", "export", "report", "dashboard", "delete"]


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
        "warm_start": {"from": ["old", "older"], "strategy": "enqueue", "best_k": 3}})
    result = CliRunner().invoke(main, ["validate", "--offline", str(path)])   # no such sources
    assert result.exit_code == 0, result.output
    assert "parallel   GPUs 0,1, 2 trial(s) per GPU" in result.output
    assert "warm start enqueue from old, older, best 3 of each; out of range: clip" in result.output


@pytest.mark.parametrize("parallel, line", [
    ({"gpus_per_trial": 2}, "parallel   every GPU found, 2 GPUs per trial (NCCL ranks)"),
    ({"procs_per_trial": 2, "workers": 3},
     "parallel   3 CPU worker(s), 2 processes per trial (gloo ranks), no GPU"),
])
def test_validate_shows_the_ranks_of_a_trial(tmp_path, parallel, line):
    path = user_study(tmp_path, extra={"parallel": parallel})
    result = CliRunner().invoke(main, ["validate", "--offline", str(path)])
    assert result.exit_code == 0, result.output
    assert line in result.output


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
    assert [r["outcome"] for r in rows] == ["complete"] * 3
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


def test_worker_with_create_starts_a_missing_study_and_runs_its_budget(tmp_path):
    path = user_study(tmp_path, trials=2)
    result = CliRunner().invoke(main, ["worker", str(path), "--create", "--no-live"])
    assert result.exit_code == 0, result.output
    assert [t.state.name for t in trials_of(tmp_path)] == ["COMPLETE", "COMPLETE"]
    assert optuna.load_study(study_name="quad", storage=f"sqlite:///{tmp_path / 'store.db'}"
                             ).user_attrs["autotune"]["metrics"] == ["val_loss"]


def test_a_worker_that_loses_the_race_to_create_the_study_leaves_its_warm_start_to_the_winner(
        tmp_path, monkeypatch):
    from autotune import store, study
    from autotune.spec import load_spec
    old = user_study(tmp_path, trials=3, name="old")
    assert invoke("run", str(old), "--no-live").exit_code == 0
    spec = load_spec(user_study(tmp_path, extra={"warm_start": {"from": ["old"], "best_k": 2}}))
    real, calls = store.study_exists, []

    def looks_before_the_winner_created_it(storage, name):
        calls.append(name)
        return False if len(calls) == 1 else real(storage, name)
    monkeypatch.setattr(store, "study_exists", looks_before_the_winner_created_it)
    store.create_or_load(store.open_storage(spec.storage), "quad", ["minimize"])   # the winner, not yet enqueued
    calls.clear()
    study.prepare(spec, join_only=True, create=True)
    assert trials_of(tmp_path) == []   # the winner enqueues the 2; the loser, nothing on top


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


def held_study(tmp_path: Path, **kwargs) -> tuple[Path, Path, Path]:
    """A study whose trials run while the file ``hold`` exists; each touches ``started``."""
    hold, started = tmp_path / "hold", tmp_path / "started"
    hold.touch()
    path = user_study(tmp_path, objective="tests.user_objectives:held", hold=str(hold),
                      started=str(started), **kwargs)
    return path, hold, started


@pytest.mark.slow
def test_hard_stop_at_the_timeout_exits_0_and_the_next_run_reruns_the_cut_trials(tmp_path):
    path, hold, _ = held_study(tmp_path, trials=2)
    for timeout in (3, 6, 12, 24):   # a loaded machine may start no trial within 3 s: then longer
        proc = _cli("run", str(path), "--timeout", f"{timeout}s", "--hard-stop", "--no-live")
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
        cut = trials_of(tmp_path)
        if cut:
            break
    interrupted = [t for t in cut if t.user_attrs.get("stop_reason") == "interrupted"]
    assert interrupted and all(t.state.name == "FAIL" for t in interrupted), out
    assert all(t.user_attrs["interrupted_by"] == "timeout" for t in interrupted)
    assert "every trial failed" not in out and "re-queued" in out
    url = f"sqlite:///{tmp_path / 'store.db'}"
    status = invoke("status", "--storage", url).output
    assert f"{len(interrupted)} interrupted" in status and "failed" not in status

    hold.unlink()
    result = invoke("run", str(path))
    assert result.exit_code == 0, result.output
    after = trials_of(tmp_path)
    reruns = sorted((t for t in after if t.system_attrs.get("autotune:rerun_of") is not None),
                    key=lambda t: t.datetime_start)
    assert {t.system_attrs["autotune:rerun_of"] for t in reruns} == {t.number for t in interrupted}
    assert all(t.state.name == "COMPLETE" for t in reruns)
    ran_now = [t for t in after if t.number not in {i.number for i in interrupted}]
    assert min(ran_now, key=lambda t: t.datetime_start).number == reruns[0].number
    assert sum(t.state.name == "COMPLETE" for t in after) == 2


def test_ctrl_c_exits_130_and_marks_the_running_trial_interrupted(tmp_path):
    path, _, started = held_study(tmp_path, trials=1, extra={"parallel": {"workers": 1}})
    proc = _cli("run", str(path), "--no-live", start_new_session=True)
    deadline = time.monotonic() + 120
    while not started.exists():          # the trial runs: now Ctrl-C means something
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)   # as a terminal does: the whole process group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "interrupted" in out
    (trial, copy) = trials_of(tmp_path)
    assert trial.state.name == "FAIL" and trial.user_attrs["stop_reason"] == "interrupted"
    assert trial.user_attrs["interrupted_by"] == "SIGINT" and "fail_reason" not in trial.user_attrs
    assert copy.state.name == "WAITING" and copy.params == trial.params


@pytest.mark.parametrize("result, code", [
    (dict(stopped_by="timeout", completed=2), 0),
    (dict(stopped_by="timeout", interrupted_trials=2), 0),            # --hard-stop at the timeout
    (dict(stopped_by="trials", completed=3, failed=1), 0),            # some failed, the run went on
    (dict(stopped_by="interrupted", interrupted=True, interrupted_trials=1, failed=2), 130),
    (dict(stopped_by="failures", failed=10), 1),
    (dict(stopped_by="timeout", failed=2, interrupted_trials=1), 1),  # every trial it ran failed
])
def test_exit_code_is_1_only_for_trials_that_failed_on_their_own(result, code):
    from autotune.cli import run_outcome
    from autotune.scheduler import RunResult
    assert run_outcome(RunResult("s", **result), "s")[0] == code


def test_status_of_one_study_and_of_a_missing_one(tmp_path):
    assert invoke("run", str(user_study(tmp_path, trials=2))).exit_code == 0
    url = f"sqlite:///{tmp_path / 'store.db'}"
    detail = invoke("status", "quad", "--storage", url)
    assert detail.exit_code == 0, detail.output
    assert "objectives  val_loss (minimize)" in detail.output
    assert "trials      2: 2 complete" in detail.output and "best        #" in detail.output
    missing = CliRunner().invoke(main, ["status", "qaud", "--storage", url])
    assert missing.exit_code == 2 and "did you mean 'quad'?" in missing.output


def _timed_store(tmp_path: Path) -> str:
    """A store with one study whose finished trials carry ``time_s`` (and one older trial without)."""
    url = f"sqlite:///{tmp_path / 'timed.db'}"
    study = optuna.create_study(study_name="timed", storage=url)
    for train, compile_ in ((8.0, 2.0), (9.0, 0.0)):
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"time_s": {
            "setup": 0.5, "compile": compile_, "train": train, "eval": 0.5, "total": 9.0 + compile_}}))
    study.add_trial(optuna.trial.create_trial(value=2.0))
    return url


def test_status_says_how_much_time_went_to_training_steps(tmp_path):
    url = _timed_store(tmp_path)
    listing = invoke("status", "--storage", url).output
    # (8 + 9) s of training in (11 + 9) s of slot time; compile 2 s of 20
    assert "time in training steps: 85 % (largest overhead: compile 10 %)" in listing
    detail = invoke("status", "timed", "--storage", url).output
    assert "time in training steps: 85 %" in detail
    assert "time split  train 85 %, compile 10 %, setup 5 %, eval 5 %" in detail


def test_status_leaves_the_time_line_out_when_no_trial_has_time_s(tmp_path):
    assert invoke("run", str(user_study(tmp_path, trials=1))).exit_code == 0
    assert "time in training" not in invoke("status", "--storage", f"sqlite:///{tmp_path / 'store.db'}").output


def test_delete_asks_on_a_terminal_and_refuses_without_one(tmp_path, monkeypatch):
    url = _timed_store(tmp_path)
    refused = CliRunner().invoke(main, ["delete", "timed", "--storage", url])
    assert refused.exit_code == 2 and "--yes" in refused.output
    monkeypatch.setattr("autotune.cli._stdin_is_tty", lambda: True)
    declined = CliRunner().invoke(main, ["delete", "timed", "--storage", url], input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.output
    assert optuna.study.get_all_study_names(url) == ["timed"]
    agreed = CliRunner().invoke(main, ["delete", "timed", "--storage", url], input="y\n")
    assert agreed.exit_code == 0 and "3 trials" in agreed.output
    assert optuna.study.get_all_study_names(url) == []


def test_delete_with_yes_and_a_missing_study(tmp_path):
    url = _timed_store(tmp_path)
    missing = CliRunner().invoke(main, ["delete", "timd", "--storage", url, "--yes"])
    assert missing.exit_code == 2 and "did you mean 'timed'?" in missing.output
    assert invoke("delete", "timed", "--storage", url, "--yes").exit_code == 0
    assert optuna.study.get_all_study_names(url) == []


@pytest.mark.postgres
def test_delete_in_postgresql(pg_url):
    name = f"del-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=pg_url)
    result = invoke("delete", name, "--storage", pg_url, "--yes")
    assert result.exit_code == 0, result.output
    assert name not in optuna.study.get_all_study_names(pg_url)


@pytest.mark.postgres
def test_study_in_postgresql(tmp_path, pg_url):
    name = f"quad-{uuid.uuid4().hex[:8]}"
    path = user_study(tmp_path, trials=3, name=name)
    result = CliRunner().invoke(main, ["run", str(path), "--storage", pg_url])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=name, storage=pg_url)
    assert len([t for t in study.get_trials() if t.state.name == "COMPLETE"]) == 3
    optuna.delete_study(study_name=name, storage=pg_url)


def test_validate_shows_the_per_trial_limit_and_the_constraints(tmp_path):
    path = tmp_path / "limits.yaml"
    path.write_text("study: limits\nspace: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\n"
                    "objectives: [{metric: val_loss, direction: minimize}]\n"
                    "constraints: ['peak_mem_mb <= 40000', 'latency_ms <= 5']\n"
                    "budget: {trials: 3, trial_timeout: 10m}\n")
    result = invoke("validate", "--offline", str(path))
    assert result.exit_code == 0, result.output
    assert "budget 3 trials, at most 600 s a trial" in result.output
    assert "constraints peak_mem_mb <= 40000; latency_ms <= 5" in result.output


