"""A PostgreSQL restart in the middle of a study costs no trial: the study meets its budget, every
trial finished before the restart is still there, and none fails for it.

The server restarted is a private one (``initdb`` in a temporary folder, its own port), so that the
shared PostgreSQL that other tests use in parallel never goes down. Needs root (to run the server as
the ``postgres`` user) and PostgreSQL's server programs: CI has both; under ``CI=true`` their absence
fails the test instead of skipping it.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState

from scheduler_tests.helpers import FINISHED, count, spawn_run, trials, wait_until


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    """A throw-away PostgreSQL cluster run as the ``postgres`` user."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.data, self.log = folder / "data", folder / "server.log"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True,
                       text=True, timeout=120)

    def init(self) -> None:
        shutil.chown(self.folder, "postgres")
        self._as_postgres(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", *extra, action)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_server():
    problem = None
    if os.geteuid() != 0:
        problem = "needs root to run a private PostgreSQL as the postgres user"
    elif not (_bin("initdb") and _bin("pg_ctl") and shutil.which("runuser")):
        problem = "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the PostgreSQL restart test must run in CI: {problem}")
        pytest.skip(problem)
    # not under pytest's tmp_path: its parents are root's alone, and the server runs as postgres
    folder = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
    server = PrivateServer(folder)
    try:
        server.init()
        server.pg_ctl("start")
        yield server
    finally:
        try:
            server.pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass                                   # it never started; the error above says why
        shutil.rmtree(folder, ignore_errors=True)


def _finished(url: str, name: str) -> int:
    try:
        return count(url, name, *FINISHED)
    except KeyError:              # the run has not created the study yet
        return 0


@pytest.mark.postgres
def test_a_postgresql_restart_mid_study_loses_no_trial_and_fails_none(private_server, tmp_path):
    url, name = private_server.url, "restart"
    gate = tmp_path / "gate"          # a trial starts its steps only once it takes a token here
    gate.mkdir()
    for token in range(3):
        (gate / f"go-{token}").touch()
    run = spawn_run(url, name, trials=10, workers=2, steps=4, sleep_s=0.15, gate=str(gate))
    try:
        wait_until(lambda: _finished(url, name) >= 3, timeout=180)
        before = {t.number for t in trials(url, name) if t.state in FINISHED}
        private_server.pg_ctl("restart", "-m", "fast")            # every connection dropped, server down
        assert len(before) == 3 and run.poll() is None            # it went down mid-study
        for token in range(3, 10):                                # the rest run after the restart
            (gate / f"go-{token}").touch()
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    after = trials(url, name)
    finished = {t.number for t in after if t.state in FINISHED}
    assert before <= finished                                     # nothing finished was lost
    assert len(finished) == 10                                    # the budget was met
    assert [t.user_attrs.get("fail_reason") for t in after if t.state == TrialState.FAIL] == []
