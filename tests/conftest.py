"""Settings and fixtures for the whole suite.

``pg_url``: the PostgreSQL that CI starts (``AUTOTUNE_TEST_PG``, default 127.0.0.1:5432, database
``test``). Where none answers, its tests skip, except under CI=true, where they fail: CI has one,
and a skip there would hide a broken test.

No GPU on this machine (no NVIDIA or ROCm device, no ``nvidia-smi``): say so once through
``CUDA_VISIBLE_DEVICES``, which ``autotune.scheduler.gpus.detect_gpus`` respects, so that each ``autotune
run`` with ``gpus: auto`` skips the child process that imports torch to count GPUs (~4 s on a
2-core CPU, once per run). Spawned workers and ``autotune`` subprocesses inherit it.
``tests/scheduler_tests/test_slots.py`` checks that detection without it.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil

import pytest

PG_URL = os.environ.get("AUTOTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _no_gpu_here() -> bool:
    return shutil.which("nvidia-smi") is None and not glob.glob("/dev/nvidia*") \
        and not os.path.exists("/dev/kfd")


if _no_gpu_here():
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


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
