"""GPU inventory and the scheduler's slots.

Owns: finding the GPUs of this machine without initialising CUDA in the calling process
(``nvidia-smi -L``, else ``torch.cuda.device_count()`` in a child process), and turning
``parallel: {gpus, trials_per_gpu, workers}`` into slots, each with the environment its worker
process gets (``CUDA_VISIBLE_DEVICES``, and ``OMP_NUM_THREADS``: the cores split among the
workers; on CPU never more workers than cores).
Must not know about: Optuna, the model.
"""
from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace

from autotune.spec_types import ParallelSpec


@dataclass(frozen=True)
class Slot:
    """One place a trial runs: a GPU (or none) and a running index among the slots."""

    index: int
    gpu: str | None          # the CUDA_VISIBLE_DEVICES value; None: CPU worker (GPUs hidden)
    share: float = 1.0       # the GPUs the slot holds: 1 / trials_per_gpu, or gpus_per_trial
    threads: int | None = None   # torch CPU threads (OMP_NUM_THREADS): the cores split among the slots
    extra_env: tuple[tuple[str, str], ...] = ()   # e.g. the run's MPS pipe (scheduler/mps.py)

    @property
    def visible_devices(self) -> str:
        return "" if self.gpu is None else self.gpu

    @property
    def env(self) -> dict[str, str]:
        """Environment variables the slot's worker process starts with."""
        env = {"CUDA_VISIBLE_DEVICES": self.visible_devices}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        env.update(self.extra_env)
        return env


def shared_gpus(slots: list[Slot]) -> list[str]:
    """The GPUs (CUDA_VISIBLE_DEVICES entries) that several slots share, in order."""
    gpus = [s.gpu for s in slots if s.gpu is not None]
    return sorted({g for g in gpus if gpus.count(g) > 1}, key=gpus.index)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's or taskset's share)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def detect_gpus(ask_torch: bool = True) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ('0', '1', or UUIDs).

    An existing ``CUDA_VISIBLE_DEVICES`` is respected: its entries are the GPUs. Without
    ``nvidia-smi``, ``ask_torch`` asks torch in a child process (seconds) where a GPU driver shows
    (``_gpu_device_nodes``); else none are found.
    """
    return list(_detect_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), ask_torch))


@functools.lru_cache(maxsize=None)  # the CLI and the scheduler both ask; the answer takes seconds
def _detect_gpus(visible: str | None, ask_torch: bool) -> tuple[str, ...]:
    return tuple(_find_gpus(visible, ask_torch))


def _find_gpus(visible: str | None, ask_torch: bool) -> list[str]:
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
    if not ask_torch or not _gpu_device_nodes():
        return []
    try:  # no nvidia-smi (containers, ROCm): ask torch, in a child so CUDA stays cold here
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True, text=True, timeout=120)
        return [str(i) for i in range(int(out.stdout.strip() or 0))]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def _gpu_device_nodes() -> bool:
    """Whether a GPU driver shows on this Linux machine (NVIDIA, ROCm's /dev/kfd, WSL's /dev/dxg):
    without one, no child process is started to ask torch (seconds on a laptop, each run). Other
    systems are asked."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in GPU_DEVICE_NODES)


def plan_slots(parallel: ParallelSpec, available: list[str] | None = None) -> list[Slot]:
    """Slots for ``parallel``: each GPU times ``trials_per_gpu``, or CPU slots.

    ``gpus: auto`` takes every GPU found; ``[0, 2]`` those indices; ``N`` the first N. On GPUs the
    flat form's ``parallel_evals`` (``evals``) sets ``trials_per_gpu`` to ``ceil(evals / GPUs)``.
    With no GPU, ``workers`` (default 1) CPU slots with GPUs hidden, but no more than the cores
    this process may use (``fit_cores``, what study files ask). Every slot, CPU or GPU, gets
    ``cores // slots`` (at least 1) torch threads (``OMP_NUM_THREADS``, unless that is set already:
    then that). ``gpus_per_trial: N``: slots of N GPUs each;
    ``procs_per_trial: N``: CPU slots (GPUs hidden), no more than cores / N with ``fit_cores``.
    """
    gpus = _chosen_gpus(parallel, available)
    return _split_cores(_slots_on(parallel, gpus))


def _slots_on(parallel: ParallelSpec, gpus: list[str]) -> list[Slot]:
    if parallel.searched_width is not None:
        return _unit_slots(parallel, gpus)
    if parallel.procs_per_trial > 1:   # CPU ranks (gloo): GPUs hidden from them
        gpus = []
    if parallel.gpus_per_trial > 1:
        return _wide_slots(gpus, parallel.gpus_per_trial)
    if not gpus:
        n = max(1, parallel.workers or 1)
        if parallel.fit_cores:   # a trial of procs_per_trial ranks takes that many cores
            n = min(n, max(1, usable_cores() // parallel.procs_per_trial))
        return [Slot(i, None) for i in range(n)]
    per_gpu = max(1, parallel.trials_per_gpu)
    if parallel.evals:
        per_gpu = math.ceil(parallel.evals / len(gpus))
    return [Slot(i * per_gpu + k, gpu, 1.0 / per_gpu) for i, gpu in enumerate(gpus) for k in range(per_gpu)]


def _split_cores(slots: list[Slot]) -> list[Slot]:
    """The slots share the CPU: each worker gets ``cores // slots`` torch threads (at least 1;
    ``OMP_NUM_THREADS`` where set), on GPU slots too, as torchrun does for its ranks. Left to
    torch, every GPU worker would start one thread per core (4 workers on 16 cores: 64 threads
    contending for the host work of their steps: data, launches, the optimizer's bookkeeping)."""
    threads = _env_threads() or max(1, usable_cores() // max(1, len(slots)))
    return [replace(s, threads=threads) for s in slots]


def _wide_slots(gpus: list[str], width: int) -> list[Slot]:
    """Slots of ``width`` GPUs each (``CUDA_VISIBLE_DEVICES=0,1``), the GPUs packed in order; GPUs
    left over (fewer than ``width``) stay idle. A slot's share is its GPU count."""
    if len(gpus) < width:
        raise ValueError(f"gpus_per_trial {width}: only {len(gpus)} GPU(s) to run on")
    return [Slot(i, ",".join(gpus[i * width:(i + 1) * width]), float(width))
            for i in range(len(gpus) // width)]


def _unit_slots(parallel: ParallelSpec, gpus: list[str]) -> list[Slot]:
    """A searched trial width: one slot (unit) per GPU, or per CPU core for ``procs_per_trial``
    (with ``fit_cores: false`` ``workers``, at least the widest trial); the scheduler places a
    trial of width N on N free units, its lead unit's worker launching the ranks."""
    if parallel.searched_width == "gpus_per_trial":
        if len(gpus) < parallel.widest:
            raise ValueError(f"gpus_per_trial up to {parallel.widest}: only {len(gpus)} GPU(s) to run on")
        return [Slot(i, gpu, 1.0) for i, gpu in enumerate(gpus)]
    n = usable_cores() if parallel.fit_cores else max(parallel.workers or 1, parallel.widest)
    return [Slot(i, None) for i in range(n)]


def gpus_for(parallel: ParallelSpec) -> list[str]:
    """The GPUs a run with ``parallel`` may use (``parallel.gpus`` of those found)."""
    return _chosen_gpus(parallel, None)


def _chosen_gpus(parallel: ParallelSpec, available: list[str] | None) -> list[str]:
    if isinstance(parallel.gpus, (tuple, list)):
        return [str(g) for g in parallel.gpus]
    found = detect_gpus() if available is None else list(available)
    return found if parallel.gpus == "auto" else found[: int(parallel.gpus)]


def _env_threads() -> int | None:
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return threads if threads > 0 else None


def describe_slots(parallel: ParallelSpec, slots: list[Slot]) -> str:
    """One line: what ran where, and why fewer than asked (``parallel: 8 workers asked, ...``)."""
    if parallel.searched_width is not None:
        units = "GPU" if parallel.searched_width == "gpus_per_trial" else "CPU core"
        return (f"parallel: {len(slots)} {units}s; each trial takes as many as its searched "
                f"{parallel.searched_width} (1 to {parallel.widest})")
    if parallel.gpus_per_trial > 1:
        return (f"parallel: {len(slots)} trial(s) at a time, {parallel.gpus_per_trial} GPUs each "
                f"({', '.join(s.gpu or '' for s in slots)})")
    if slots and slots[0].gpu is not None:
        gpus = sorted({s.gpu for s in slots})
        per_gpu = len(slots) // len(gpus)
        asked = f"{parallel.evals} concurrent trials asked, " if parallel.evals else ""
        threads = slots[0].threads
        each = f", {threads} CPU thread{'s' if threads != 1 else ''} each" if threads else ""
        mps = ", side by side through MPS" if parallel.mps and per_gpu > 1 else ""
        return (f"parallel: {asked}{len(gpus)} GPU(s): {per_gpu} trial(s) per GPU{mps}, "
                f"{len(slots)} at a time{each}")
    asked = max(1, parallel.workers or 1)
    threads = slots[0].threads if slots else None
    each = f", {threads} torch thread{'s' if threads != 1 else ''} each" if threads else ""
    cores = usable_cores()
    if parallel.procs_per_trial > 1:
        each += f", {parallel.procs_per_trial} processes (gloo ranks) per trial"
    if asked > len(slots):
        return (f"parallel: {asked} workers asked, {cores} CPU cores: running {len(slots)} at a "
                f"time{each}")
    return f"parallel: {len(slots)} CPU worker(s) on {cores} cores{each}, no GPU"
