"""GPU inventory and the scheduler's slots.

Owns: finding the GPUs of this machine without initialising CUDA in the calling process
(``nvidia-smi -L``, else ``torch.cuda.device_count()`` in a child process), and turning
``parallel: {gpus, trials_per_gpu, workers}`` into slots, each with the ``CUDA_VISIBLE_DEVICES``
value its worker process gets.
Must not know about: Optuna, the model.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from autotune.spec_types import ParallelSpec


@dataclass(frozen=True)
class Slot:
    """One place a trial runs: a GPU (or none) and a running index among the slots."""

    index: int
    gpu: str | None          # the CUDA_VISIBLE_DEVICES value; None: CPU worker (GPUs hidden)
    share: float = 1.0       # the part of its device the slot holds: 1 / trials_per_gpu on a GPU

    @property
    def visible_devices(self) -> str:
        return "" if self.gpu is None else self.gpu


def detect_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ('0', '1', or UUIDs).

    An existing ``CUDA_VISIBLE_DEVICES`` is respected: its entries are the GPUs.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
                return [str(i) for i in range(len(lines))]
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:  # no nvidia-smi (containers, ROCm): ask torch, in a child so CUDA stays cold here
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True, text=True, timeout=120)
        return [str(i) for i in range(int(out.stdout.strip() or 0))]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


def plan_slots(parallel: ParallelSpec, available: list[str] | None = None) -> list[Slot]:
    """Slots for ``parallel``: each GPU times ``trials_per_gpu``, or ``workers`` CPU slots.

    ``gpus: auto`` takes every GPU found; ``[0, 2]`` those indices; ``N`` the first N.
    With no GPU, ``workers`` (default 1) CPU slots with GPUs hidden.
    """
    gpus_setting = parallel.gpus
    if isinstance(gpus_setting, (tuple, list)):
        gpus = [str(g) for g in gpus_setting]
    else:
        found = detect_gpus() if available is None else list(available)
        gpus = found if gpus_setting == "auto" else found[: int(gpus_setting)]
    if not gpus:
        return [Slot(i, None) for i in range(max(1, parallel.workers or 1))]
    per_gpu = max(1, parallel.trials_per_gpu)
    return [Slot(i * per_gpu + k, gpu, 1.0 / per_gpu)
            for i, gpu in enumerate(gpus) for k in range(per_gpu)]
