"""The dashboard is read-only unless --allow-writes, takes an optional access token, and warns
when it listens beyond loopback."""
from __future__ import annotations

import io
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import optuna
import pytest

from autotune import dashboard, store

from .helpers import study_id


def _call(app, method="GET", path="/api/studies", query="", headers=None):
    """One request straight into a WSGI app: (status, headers, body)."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "wsgi.input": io.BytesIO(b"")}
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()})
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen.update(status=status, headers=dict(response_headers))
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body.decode()


def _inner(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REQUEST_METHOD']} reached the dashboard".encode()]


# --- read-only by default -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_pass(method):
    assert _call(dashboard.guard(_inner), method)[0] == "200 OK"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_are_refused_by_default(method):
    status, headers, body = _call(dashboard.guard(_inner), method)
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    assert "read-only" in body and "--allow-writes" in body and "reached" not in body


def test_allow_writes_passes_a_post_through():
    assert _call(dashboard.guard(_inner, allow_writes=True), "POST") == (
        "200 OK", {"Content-Type": "text/plain"}, "POST reached the dashboard")


def test_an_http_delete_leaves_the_study_in_the_store(server, single_study):
    sid = study_id(server, "single")
    request = urllib.request.Request(server.url.removesuffix("/dashboard/") + f"/api/studies/{sid}",
                                     method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 405
    assert study_id(server, "single") == sid


@contextmanager
def _serving(url, **options):
    srv = dashboard.make_server(url, port=0, **options)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv, srv.url.removesuffix("/dashboard/")
    finally:
        srv.shutdown()
        thread.join(5)


def test_with_allow_writes_the_dashboard_can_delete_a_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store.create_or_load_study(store.open_storage(url), "doomed", ["minimize"])
    with _serving(url, allow_writes=True) as (srv, base):
        sid = study_id(srv, "doomed")
        request = urllib.request.Request(f"{base}/api/studies/{sid}", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 204 or r.status == 200
    assert optuna.get_all_study_names(store.open_storage(url)) == []


# --- the access token ---------------------------------------------------------------------------
def test_with_a_token_a_request_without_it_gets_401():
    app = dashboard.guard(_inner, token="s3cret")
    assert _call(app)[0] == "401 Unauthorized"
    assert _call(app, headers={"Authorization": "Bearer wrong"})[0] == "401 Unauthorized"
    assert _call(app, query="token=wrong")[0] == "401 Unauthorized"


def test_the_token_opens_it_by_header_or_once_by_query_then_by_cookie():
    app = dashboard.guard(_inner, token="s3cret")
    assert _call(app, headers={"Authorization": "Bearer s3cret"})[0] == "200 OK"
    status, headers, _ = _call(app, path="/dashboard/", query="token=s3cret")
    assert status == "200 OK"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert _call(app, headers={"Cookie": cookie})[0] == "200 OK"


def test_a_token_does_not_open_writes():
    app = dashboard.guard(_inner, token="s3cret")
    assert _call(app, "DELETE", headers={"Authorization": "Bearer s3cret"})[0] == "405 Method Not Allowed"


def test_a_served_dashboard_asks_for_its_token(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    store.create_or_load_study(store.open_storage(url), "s", ["minimize"])
    with _serving(url, token="s3cret") as (srv, base):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/api/studies", timeout=30)
        assert info.value.code == 401
        request = urllib.request.Request(f"{base}/api/studies",
                                         headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200


# --- listening beyond loopback ------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_warning(host):
    assert dashboard.exposure_warning(host, 8080, allow_writes=True, token=None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "myhost.example"])
def test_binding_beyond_loopback_warns_that_anyone_can_read_the_studies(host):
    text = dashboard.exposure_warning(host, 8080, allow_writes=False, token=None)
    assert text.startswith("warning: ") and ":8080" in text
    assert "anyone who can reach that port can read every study" in text
    assert "--token" in text


def test_the_warning_names_changes_and_deletes_with_allow_writes():
    text = dashboard.exposure_warning("0.0.0.0", 80, allow_writes=True, token="zq-s3cret")
    assert "can read, change or delete every study" in text and "only with the token" in text
    assert "zq-s3cret" not in text


def test_serve_on_loopback_prints_no_warning_and_says_read_only(storage_url, single_study, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(dashboard.DashboardServer, "serve_forever", interrupted)
    out, err = io.StringIO(), io.StringIO()
    dashboard.serve(storage_url, port=0, out=out, err=err)
    assert err.getvalue() == ""
    assert "read-only (--allow-writes to change studies from it)" in out.getvalue()


def test_the_command_takes_the_token_from_the_environment(storage_url, single_study, monkeypatch):
    from click.testing import CliRunner

    from autotune.cli import main
    seen = {}
    monkeypatch.setattr(dashboard, "serve", lambda url, **kw: seen.update(kw))
    monkeypatch.setenv(dashboard.TOKEN_ENV, "from-env")
    result = CliRunner().invoke(main, ["dashboard", "--storage", storage_url])
    assert result.exit_code == 0, result.output
    assert seen == {"host": "127.0.0.1", "port": 8080, "allow_writes": False, "token": "from-env"}
    CliRunner().invoke(main, ["dashboard", "--storage", storage_url, "--allow-writes", "--token", "x"])
    assert seen["allow_writes"] is True and seen["token"] == "x"
