"""parallel.mps: a private CUDA MPS daemon for the trials that share a GPU (scheduler/mps.py).

No test here needs a GPU: a stand-in ``nvidia-cuda-mps-control`` on PATH records how it was called,
and the context check is replaced by one that looks for the daemon's pipe in its environment. The
real daemon is measured by bench/mps_probe.py and `autotune run` on the device machine."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune import scheduler, store
from autotune.scheduler import mps as mps_mod
from autotune.scheduler import policies
from autotune.scheduler.gpus import describe_slots, plan_slots, shared_gpus
from autotune.spec import SpecError, parse_spec
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import objectives

PIPE = "CUDA_MPS_PIPE_DIRECTORY"


def _fake_control(tmp_path: Path, monkeypatch, *, rc: int = 0, stderr: str = "") -> Path:
    """A stand-in nvidia-cuda-mps-control first on PATH; each call appends a JSON line (its
    arguments, stdin, and the GPUs and pipe it saw) to the returned log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "control.log"
    bin_dir.mkdir()
    script = bin_dir / mps_mod.CONTROL
    script.write_text(f"""#!{os.sys.executable}
import json, os, sys
stdin = "" if sys.argv[1:] == ["-d"] else sys.stdin.read()
with open({str(log)!r}, "a") as f:
    f.write(json.dumps({{"args": sys.argv[1:], "stdin": stdin, "pipe": os.environ.get("{PIPE}"),
                        "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
sys.stderr.write({stderr!r})
sys.exit({rc})
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def check_sees_pipe(monkeypatch):
    """The context check passes where the daemon's pipe is in the environment (no GPU needed)."""
    monkeypatch.setattr(mps_mod, "_CHECK", f"import os, sys; sys.exit(0 if os.environ.get('{PIPE}') else 3)")


def test_off_or_without_a_shared_gpu_no_daemon_starts(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch)
    assert mps_mod.start_mps(False, ["0"]).env == {}
    off = mps_mod.start_mps(True, [])
    assert off.env == {} and "no GPU runs several trials" in off.note
    assert _calls(log) == []


def test_without_the_control_program_the_run_goes_on_time_sliced(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    got = mps_mod.start_mps(True, ["0"])
    assert got.env == {} and "nvidia-cuda-mps-control is not on PATH" in got.note
    got.stop()


def test_the_daemon_starts_in_a_private_folder_sees_every_gpu_and_quits_at_stop(tmp_path, monkeypatch,
                                                                                check_sees_pipe):
    log = _fake_control(tmp_path, monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    got = mps_mod.start_mps(True, ["2", "3"])
    assert set(got.env) == {PIPE, "CUDA_MPS_LOG_DIRECTORY"} and got.note.startswith("MPS:")
    folder = Path(got.folder)
    assert folder.is_dir() and Path(got.env[PIPE]).is_relative_to(folder)
    start, = _calls(log)
    assert start["args"] == ["-d"] and start["pipe"] == got.env[PIPE]
    assert start["visible"] is None      # the slots' entries count among the machine's GPUs
    got.stop()
    got.stop()                           # twice is harmless
    quit_ = _calls(log)[1:]
    assert [c["stdin"] for c in quit_] == ["quit\n"] and quit_[0]["pipe"] == start["pipe"]
    assert not folder.exists() and got.env == {}


def test_a_daemon_left_by_a_killed_run_is_quit_by_the_next_run(tmp_path, monkeypatch, check_sees_pipe):
    import subprocess
    import sys
    import tempfile
    log = _fake_control(tmp_path, monkeypatch)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan, running = tmp / f"{mps_mod.PREFIX}killed", tmp / f"{mps_mod.PREFIX}running"
    for folder, pid in ((orphan, gone.stdout.strip()), (running, str(os.getpid()))):
        (folder / "pipe").mkdir(parents=True)
        (folder / mps_mod.OWNER).write_text(pid)
    got = mps_mod.start_mps(True, ["0"])
    quit_call, start = _calls(log)[:2]
    assert quit_call["stdin"] == "quit\n" and quit_call["pipe"] == str(orphan / "pipe")
    assert start["args"] == ["-d"] and start["pipe"] == got.env[PIPE]
    assert not orphan.exists() and running.is_dir()       # a live run's daemon is left alone
    assert (Path(got.folder) / mps_mod.OWNER).read_text() == str(os.getpid())
    got.stop()
    assert sorted(p.name for p in tmp.iterdir()) == [running.name]


def test_a_daemon_that_fails_to_start_is_named_and_leaves_nothing(tmp_path, monkeypatch, check_sees_pipe):
    _fake_control(tmp_path, monkeypatch, rc=1, stderr="An instance of this daemon is already running")
    got = mps_mod.start_mps(True, ["0"])
    assert got.env == {} and got.folder is None
    assert "did not start" in got.note and "already running" in got.note and "time-sliced" in got.note


def test_a_failed_context_check_stops_the_daemon(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch)
    monkeypatch.setattr(mps_mod, "_CHECK", "import sys; sys.exit('cuCtxCreate returned CUDA error 805')")
    got = mps_mod.start_mps(True, ["1"])
    assert got.env == {} and "GPU 1: cuCtxCreate returned CUDA error 805" in got.note
    assert [c["stdin"] for c in _calls(log)] == ["", "quit\n"]


def test_shared_gpus_are_those_with_several_slots():
    slots = plan_slots(ParallelSpec(gpus=[0, 1], trials_per_gpu=2), available=["0", "1"])
    assert shared_gpus(slots) == ["0", "1"]
    assert shared_gpus(plan_slots(ParallelSpec(gpus=[0, 1]), available=["0", "1"])) == []
    line = describe_slots(ParallelSpec(gpus=[0], trials_per_gpu=3, mps=True), plan_slots(
        ParallelSpec(gpus=[0], trials_per_gpu=3, mps=True), available=["0"]))
    assert "3 trial(s) per GPU, side by side through MPS" in line


def test_the_workers_of_a_run_reach_the_daemon_and_it_quits_after_the_run(tmp_path, monkeypatch,
                                                                         check_sees_pipe, sqlite_url):
    log = _fake_control(tmp_path, monkeypatch)
    out = tmp_path / "seen"
    out.mkdir()
    study = store.create_or_load_study(store.open_storage(sqlite_url), "mps", ["minimize"],
                                       pruner=optuna.pruners.NopPruner())
    result = scheduler.run_study(study, storage_url=sqlite_url, suggest=objectives.suggest_x,
                                 objective=objectives.SeesEnv(str(out), (PIPE, "CUDA_VISIBLE_DEVICES")),
                                 budget=BudgetSpec(trials=4),
                                 parallel=ParallelSpec(gpus=[0], trials_per_gpu=2, mps=True))
    assert result.completed == 4
    start, quit_ = _calls(log)
    seen = [json.loads(p.read_text()) for p in out.iterdir()]
    assert len(seen) == 4 and all(s == {PIPE: start["pipe"], "CUDA_VISIBLE_DEVICES": "0"} for s in seen)
    assert quit_["stdin"] == "quit\n" and not Path(start["pipe"]).exists()


def test_parallel_mps_must_be_true_or_false():
    base = {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "objectives": [{"metric": "val_loss", "direction": "minimize"}]}
    assert parse_spec({**base, "parallel": {"trials_per_gpu": 2, "mps": True}}).parallel.mps is True
    assert parse_spec(base).parallel.mps is False
    with pytest.raises(SpecError, match=r"parallel\.mps: must be true or false, got"):
        parse_spec({**base, "parallel": {"mps": "yes"}})


def test_validate_says_the_trials_of_a_gpu_run_through_mps(tmp_path):
    from click.testing import CliRunner

    from autotune.cli import main
    study = tmp_path / "s.yaml"
    study.write_text("space: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\n"
                     "objectives: [{metric: val_loss, direction: minimize}]\n"
                     "parallel: {trials_per_gpu: 3, mps: true}\n")
    out = CliRunner().invoke(main, ["validate", str(study), "--offline"])
    assert out.exit_code == 0, out.output
    assert "3 trial(s) per GPU through MPS" in out.output


@pytest.mark.parametrize("mps", [True, False])
def test_a_cuda_error_on_a_shared_context_is_retried_and_one_of_the_trials_own_is_not(
        tmp_path, monkeypatch, check_sees_pipe, sqlite_url, mps):
    """Through MPS a fatal GPU fault of one trial fails every trial of its GPU with a CUDA error,
    so such a failure is retried (within ``max_retries``), as a died worker's is; on a context of
    its own the error is the trial's, and it stays failed. Out-of-memory errors never retry."""
    _fake_control(tmp_path, monkeypatch)
    study = store.create_or_load_study(
        store.open_storage(sqlite_url), "fault", ["minimize"],
        sampler=optuna.samplers.PartialFixedSampler({"x": 0}, optuna.samplers.RandomSampler()),
        pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"x": 5})
    result = scheduler.run_study(study, storage_url=sqlite_url, suggest=objectives.suggest_kind,
                                 objective=objectives.FaultsOnce(str(tmp_path / "faulted")),
                                 budget=BudgetSpec(trials=3),
                                 parallel=ParallelSpec(gpus=[0], trials_per_gpu=2, mps=mps, max_retries=1))
    trials = optuna.load_study(study_name="fault", storage=sqlite_url).get_trials()
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.params == {"x": 5} and "CUDA error: an illegal memory access" in failed.user_attrs["fail_reason"]
    rerun = [t for t in trials if t.state == TrialState.COMPLETE and t.params == {"x": 5}]
    assert (len(rerun), result.retried) == ((1, 1) if mps else (0, 0))
    assert policies.gpu_fault_retried("RuntimeError: CUDA error: an illegal memory access", True)
    assert not policies.gpu_fault_retried("OutOfMemoryError: CUDA error: out of memory", True)
    assert not policies.gpu_fault_retried("RuntimeError: CUDA error: an illegal memory access", False)
