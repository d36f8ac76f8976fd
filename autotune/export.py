"""Trials as rows, for ``autotune export``: plain mappings, and those as CSV or JSON text.

Owns: which fields a trial's row has, flattening it into CSV columns (values, params, metrics,
other user attributes), JSON without non-finite floats, both a trial at a time (a study of
thousands of trials is written without building the whole text).
Must not know about: click, the scheduler, the model.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

from autotune._output import csv_safe
from autotune.outcomes import outcome
from autotune.store import study_trials


def trial_rows(study) -> list[dict[str, Any]]:
    """Every trial of ``study`` as a plain mapping: number, state, outcome, values by metric name,
    params, user attrs, start and end times, intermediate values."""
    metrics = ((study.user_attrs.get("autotune") or {}).get("metrics")
               or [f"value_{i}" for i in range(len(study.directions))])
    rows = []
    for t in study_trials(study):
        values = dict(zip(metrics, t.values)) if t.values else {}
        rows.append({
            "number": t.number, "state": t.state.name, "outcome": outcome(t),
            "values": values, "params": dict(t.params), "user_attrs": dict(t.user_attrs),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        })
    return rows


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def json_chunks(rows: list[dict[str, Any]]) -> Iterator[str]:
    """``json.dumps(_clean(rows), indent=2) + "\n"``, a trial at a time."""
    if not rows:
        yield "[]\n"
        return
    for i, row in enumerate(rows):
        item = json.dumps(_clean(row), indent=2).replace("\n", "\n  ")   # strings hold no raw newline
        yield ("[\n  " if i == 0 else ",\n  ") + item
    yield "\n]\n"


def csv_chunks(rows: list[dict[str, Any]]) -> Iterator[str]:
    """One flat row per trial (values, params, metrics, other user attrs as columns), a trial at
    a time after the header; the columns are every row's, in first-seen order."""
    flat = [_flat_row(r) for r in rows]
    columns: dict[str, None] = {}
    for row in flat:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    for row in flat:
        writer.writerow({k: csv_safe(v) for k, v in row.items()})
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def _flat_row(r: dict[str, Any]) -> dict[str, Any]:
    row = {"number": r["number"], "state": r["state"], "outcome": r["outcome"],
           "datetime_start": r["datetime_start"], "datetime_complete": r["datetime_complete"]}
    row.update({f"value.{k}": v for k, v in r["values"].items()})
    row.update({f"param.{k}": v for k, v in r["params"].items()})
    for k, v in r["user_attrs"].items():
        if isinstance(v, dict) and k == "metrics":
            row.update({f"metric.{mk}": mv for mk, mv in v.items() if not isinstance(mv, (list, dict))})
        else:
            row[f"attr.{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return row
