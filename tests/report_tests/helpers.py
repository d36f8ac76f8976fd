"""Small helpers for the dashboard tests: its JSON API by path, a study's id by name."""
from __future__ import annotations

import json
import urllib.request

from autotune import dashboard


def get_json(server: dashboard.DashboardServer, path: str) -> dict:
    base = server.url.removesuffix("/dashboard/")
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


def study_id(server: dashboard.DashboardServer, name: str) -> int:
    return next(s["study_id"] for s in get_json(server, "/api/studies")["study_summaries"] if s["study_name"] == name)
