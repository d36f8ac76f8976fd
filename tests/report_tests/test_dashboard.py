"""``autotune dashboard``: optuna-dashboard on the study store, on 127.0.0.1, with clear errors."""
from __future__ import annotations

import io
import json
import socket
import sqlite3

import pytest
from optuna.trial import TrialState

from autotune import dashboard

from .helpers import get_json, study_id


def test_binds_localhost_by_default(server):
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/dashboard/"


def test_study_api_carries_curves_and_autotune_user_attrs(server, single_study):
    detail = get_json(server, f"/api/studies/{study_id(server, 'single')}")
    trials = {t["number"]: t for t in detail["trials"]}
    assert len(trials) == len(single_study.trials)
    warm = json.loads(next(a["value"] for a in detail["user_attrs"] if a["key"] == "warm_start"))
    assert warm["strategy"] == "enqueue"
    for t in single_study.trials:
        attrs = {a["key"]: a["value"] for a in trials[t.number]["user_attrs"]}
        assert attrs["gpu"] == t.user_attrs["gpu"]
        if t.state == TrialState.FAIL:
            assert attrs["fail_reason"] == t.user_attrs["fail_reason"]
        else:
            assert json.loads(attrs["metrics"])["expert_load"] == t.user_attrs["metrics"]["expert_load"]
        if "warm_start" in t.user_attrs:
            assert attrs["warm_start"] == t.user_attrs["warm_start"]
        curve = {v["step"]: v["value"] for v in trials[t.number]["intermediate_values"]}
        assert curve == pytest.approx(t.intermediate_values)


def test_a_taken_port_is_a_clear_error(server, storage_url):
    with pytest.raises(dashboard.DashboardError, match=f"port {server.port} on 127.0.0.1 is already in use"):
        dashboard.make_server(storage_url, port=server.port)


def test_a_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(dashboard.DashboardError, match="no study store at"):
        dashboard.make_server(f"sqlite:///{tmp_path / 'none.db'}", port=0)
    assert not (tmp_path / "none.db").exists()


def test_serve_prints_the_url_and_stops_on_ctrl_c(storage_url, single_study, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(dashboard.DashboardServer, "serve_forever", interrupted)
    out = io.StringIO()
    with socket.socket() as s:       # a free port, released before serve binds it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard.serve(storage_url, port=port, out=out)
    assert f"open http://127.0.0.1:{port}/dashboard/" in out.getvalue()
    assert "dashboard stopped" in out.getvalue()


def test_dashboard_reads_never_hold_the_lock_workers_write_with(server, storage_url):
    """A read transaction of the dashboard (a long one at 5,000 trials) must not block a writer."""
    path = storage_url.removeprefix("sqlite:///")
    with server.storage.engine.connect() as reader:
        with reader.begin():
            reader.exec_driver_sql("SELECT count(*) FROM trials").fetchone()
            writer = sqlite3.connect(path, timeout=1.0, isolation_level=None)
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("UPDATE studies SET study_name = study_name")
                writer.execute("COMMIT")
            finally:
                writer.close()
