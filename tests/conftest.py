"""Settings for the whole suite.

No GPU on this machine (no NVIDIA or ROCm device, no ``nvidia-smi``): say so once through
``CUDA_VISIBLE_DEVICES``, which ``autotune.gpus.detect_gpus`` respects, so that each ``autotune
run`` with ``gpus: auto`` skips the child process that imports torch to count GPUs (~4 s on a
2-core CPU, once per run). Spawned workers and ``autotune`` subprocesses inherit it.
``tests/scheduler_tests/test_slots.py`` checks that detection without it.
"""
from __future__ import annotations

import glob
import os
import shutil


def _no_gpu_here() -> bool:
    return shutil.which("nvidia-smi") is None and not glob.glob("/dev/nvidia*") \
        and not os.path.exists("/dev/kfd")


if _no_gpu_here():
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
