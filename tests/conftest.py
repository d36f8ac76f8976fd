"""Settings and fixtures for the whole suite.

``pg_url``: the PostgreSQL that CI starts (``AUTOTUNE_TEST_PG``, default 127.0.0.1:5432, database
``test``). Where none answers, its tests skip, except under CI=true, where they fail: CI has one,
and a skip there would hide a broken test.

GPU detection needs no help here: without a GPU driver (no /dev/nvidia*, /dev/kfd, /dev/dxg) and
without ``nvidia-smi``, ``autotune.scheduler.gpus.detect_gpus`` finds none without asking torch.
"""
from __future__ import annotations

import functools
import os

import pytest

PG_URL = os.environ.get("AUTOTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def _pg_problem() -> str | None:
    from autotune import store

    try:
        store.open_storage(PG_URL).engine.dispose()
        return None
    except store.StoreError as exc:
        return str(exc)


@pytest.fixture
def pg_url() -> str:
    problem = _pg_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL needed in CI: {problem}")
        pytest.skip(f"no PostgreSQL: {problem}")
    return PG_URL
