"""``autotune dashboard``: optuna-dashboard on the study store, served on 127.0.0.1 by default.

Owns: opening the store for the dashboard (``store.open_reader``: on SQLite plain deferred
transactions, so that its long reads never hold the write lock the workers need), the WSGI server it runs in (threaded, so one slow page
does not stall the others), the URL it prints, and the errors a user can act on (store missing, port
taken). What the dashboard shows (studies, trials, learning curves, user attrs such as ``metrics``,
``fail_reason``, ``gpu``, ``warm_start``) is optuna-dashboard's own.
Must not know about: the model, the scheduler.

    server = make_server("sqlite:///autotune.db", port=0)   # port 0: any free port
    print(server.url); server.serve_forever()
"""
from __future__ import annotations

import errno
import logging
import socketserver
import sys
from typing import TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _wsgi_make_server

import optuna
import optuna_dashboard

from autotune import store

_log = logging.getLogger("autotune")


class DashboardError(Exception):
    """The dashboard cannot start: the store is missing or cannot be opened, or the port is taken."""


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


def make_server(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> DashboardServer:
    """Open the store and bind the port; raises DashboardError with what to do when either fails."""
    label = store.mask_url(storage_url)
    path = store.sqlite_path(storage_url) if store.is_sqlite(storage_url) else None
    if path is not None and not path.exists():
        raise DashboardError(f"no study store at {path} ({label}); run a study first or pass --storage")
    try:
        storage = store.open_reader(storage_url)
    except store.StoreError as exc:
        raise DashboardError(str(exc)) from None
    app = optuna_dashboard.wsgi(storage)
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
          out: TextIO | None = None) -> None:
    """Serve optuna-dashboard on the store until Ctrl-C, after printing its URL."""
    server = make_server(storage_url, host, port)
    out = out or sys.stdout
    print(f"optuna-dashboard for {server.storage_label}", file=out)
    print(f"open {server.url}  (Ctrl-C to stop)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=out)
    finally:
        server.close()
