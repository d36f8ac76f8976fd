"""``autotune dashboard``: optuna-dashboard on the study store, served on 127.0.0.1 by default.

Owns: opening the store for the dashboard (``store.open_reader``: on SQLite plain deferred
transactions, so that its long reads never hold the write lock the workers need), the WSGI server it runs in (threaded, so one slow page
does not stall the others), the URL it prints, and the errors a user can act on (store missing, port
taken). Its guard (``guard``): read-only unless ``allow_writes`` (any method but GET / HEAD gets
405), an optional access token (401 without it), and a warning when it listens beyond loopback.
What the dashboard shows (studies, trials, learning curves, user attrs such as ``metrics``,
``fail_reason``, ``gpu``, ``warm_start``) is optuna-dashboard's own.
Must not know about: the model, the scheduler.

    server = make_server("sqlite:///autotune.db", port=0)   # port 0: any free port
    print(server.url); server.serve_forever()
"""
from __future__ import annotations

import errno
import hmac
import http.cookies
import ipaddress
import logging
import socketserver
import sys
import urllib.parse
from typing import Any, Callable, Iterable, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _wsgi_make_server

import optuna
import optuna_dashboard

from autotune import store

_log = logging.getLogger("autotune")


class DashboardError(Exception):
    """The dashboard cannot start: the store is missing or cannot be opened, or the port is taken."""


TOKEN_ENV = "AUTOTUNE_DASHBOARD_TOKEN"
TOKEN_COOKIE = "autotune_dashboard_token"
READ_METHODS = ("GET", "HEAD")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def guard(app: WSGIApp, *, allow_writes: bool = False, token: str | None = None) -> WSGIApp:
    """``app`` behind the dashboard's guard: without the ``token`` (when one is set) a request gets
    401; without ``allow_writes`` any method but GET / HEAD gets 405 (optuna-dashboard would
    otherwise delete studies, rename them or tell trials for whoever asks).

    The token comes as ``Authorization: Bearer TOKEN``, or once as ``?token=TOKEN`` (a link to
    open in a browser), which sets a cookie for the page's own later requests."""

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        from_query = False
        if token is not None:
            given, from_query = _token_of(environ)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                return _refuse(start_response, "401 Unauthorized",
                               "this dashboard needs its token: open it with ?token=TOKEN or send "
                               "'Authorization: Bearer TOKEN'", [("WWW-Authenticate", "Bearer")])
        if not allow_writes and environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS:
            return _refuse(start_response, "405 Method Not Allowed",
                           "this dashboard is read-only; start it with --allow-writes to change "
                           "studies from it", [("Allow", ", ".join(READ_METHODS))])
        if not from_query:
            return app(environ, start_response)

        def with_cookie(status: str, headers: list, exc_info: Any = None) -> Any:
            cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            return start_response(status, [*headers, ("Set-Cookie", cookie)], exc_info)
        return app(environ, with_cookie)

    return guarded


def _token_of(environ: dict) -> tuple[str | None, bool]:
    """The token a request carries, and whether it came in the query string."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), False
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("token"):
        return query["token"][0], True
    cookies = http.cookies.SimpleCookie()
    try:
        cookies.load(environ.get("HTTP_COOKIE", ""))
    except http.cookies.CookieError:
        return None, False
    morsel = cookies.get(TOKEN_COOKIE)
    return (morsel.value if morsel is not None else None), False


def _refuse(start_response: Callable, status: str, text: str,
            headers: list[tuple[str, str]]) -> list[bytes]:
    body = f"{status}: {text}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False     # a name, or "" (every address)


def exposure_warning(host: str, port: int, *, allow_writes: bool, token: str | None) -> str | None:
    """What to tell a user who binds the dashboard beyond loopback (None on loopback)."""
    if is_loopback(host):
        return None
    what = ("read, change or delete every study in the store" if allow_writes
            else "read every study in the store")
    guard_text = ("only with the token" if token is not None
                  else "with no password (--token TOKEN or $" + TOKEN_ENV + " asks for one)")
    return (f"warning: the dashboard listens on {host or 'every address'}:{port}: anyone who can "
            f"reach that port can {what}, {guard_text}; the traffic is not encrypted")


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """One log line per request is noise in a terminal; errors still go to the log."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        _log.debug("dashboard: " + format, *args)


class DashboardServer:
    """A bound, not yet serving dashboard; ``url`` is where its pages are."""

    def __init__(self, httpd: WSGIServer, host: str, storage_label: str) -> None:
        self.httpd = httpd
        self.host = host
        self.port = httpd.server_address[1]
        self.storage_label = storage_label
        self.storage: optuna.storages.BaseStorage | None = None   # what the dashboard reads

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dashboard/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def close(self) -> None:
        self.httpd.server_close()


def make_server(storage_url: str, host: str = "127.0.0.1", port: int = 8080, *,
                allow_writes: bool = False, token: str | None = None) -> DashboardServer:
    """Open the store (read-only unless ``allow_writes``) and bind the port, behind ``guard``;
    raises DashboardError with what to do when either fails."""
    label = store.mask_url(storage_url)
    path = store.sqlite_path(storage_url) if store.is_sqlite(storage_url) else None
    if path is not None and not path.exists():
        raise DashboardError(f"no study store at {path} ({label}); run a study first or pass --storage")
    try:
        storage = store.open_reader(storage_url)   # also: is it a study store at all?
        if allow_writes:
            storage = store.open_storage(storage_url)
    except store.StoreError as exc:
        raise DashboardError(str(exc)) from None
    app = guard(optuna_dashboard.wsgi(storage), allow_writes=allow_writes, token=token or None)
    try:
        httpd = _wsgi_make_server(host, port, app, server_class=_ThreadingWSGIServer,
                                  handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {host} is already in use; "
                                 f"choose another with --port") from None
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server = DashboardServer(httpd, host, label)
    server.storage = storage
    return server


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080, *,
          allow_writes: bool = False, token: str | None = None,
          out: TextIO | None = None, err: TextIO | None = None) -> None:
    """Serve optuna-dashboard on the store until Ctrl-C, after printing its URL (and, when it
    listens beyond loopback, a warning on ``err``)."""
    server = make_server(storage_url, host, port, allow_writes=allow_writes, token=token)
    out, err = out or sys.stdout, err or sys.stderr
    warning = exposure_warning(host, server.port, allow_writes=allow_writes, token=token or None)
    if warning:
        print(warning, file=err, flush=True)
    mode = ("writes allowed: it can change and delete studies" if allow_writes
            else "read-only (--allow-writes to change studies from it)")
    print(f"optuna-dashboard for {server.storage_label}, {mode}", file=out)
    link = f"{server.url}?token=..." if token else server.url
    print(f"open {link}  (Ctrl-C to stop)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=out)
    finally:
        server.close()
