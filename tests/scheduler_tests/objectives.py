"""Cheap, picklable objectives for scheduler tests; spawned workers import this module by name.

Each is a small class so that it carries its settings into the worker process.
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from autotune import store
from autotune.pruners import build_pruner
from autotune.spec_types import PrunerSpec

_studies: dict[tuple[str, str], optuna.Study] = {}


def trial_of(storage_url: str, study_name: str, trial_id: int,
             pruner: PrunerSpec = PrunerSpec(), steps: int | None = None) -> optuna.trial.Trial:
    """The live trial, on a storage this process opens once, with the spec's pruner (like the
    real objective bridge)."""
    key = (storage_url, study_name)
    if key not in _studies:
        _studies[key] = optuna.load_study(study_name=study_name,
                                          storage=store.open_storage(storage_url),
                                          pruner=build_pruner(pruner, steps))
    return optuna.trial.Trial(_studies[key], trial_id)


def suggest_x(trial: optuna.trial.Trial) -> dict:
    return {"x": trial.suggest_float("x", -2.0, 2.0)}


@dataclass
class Quadratic:
    """(x - 0.5)^2 after ``steps`` reports of a curve falling towards it, ``sleep_s`` per step.
    With ``gate`` (a folder), each trial first waits to take one token file the test puts there,
    so that the test lets trials through one at a time."""

    storage_url: str
    study_name: str
    steps: int = 3
    sleep_s: float = 0.01
    gate: str = ""

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        if self.gate:
            _take_a_token(Path(self.gate), trial_id)
        trial = trial_of(self.storage_url, self.study_name, trial_id)
        final = (params["x"] - 0.5) ** 2
        for step in range(1, self.steps + 1):
            time.sleep(self.sleep_s)
            value = final + 1.0 / step
            trial.report(value, step)
            notify(step, {"loss": value})
            if trial.should_prune():
                raise optuna.TrialPruned()
        return [final]


def _take_a_token(gate: Path, trial_id: int) -> None:
    """Wait until a ``go-*`` file in ``gate`` can be renamed to ``taken-TRIAL_ID`` (one trial
    takes each token: the rename is atomic)."""
    while True:
        for token in sorted(gate.glob("go-*")):
            try:
                token.rename(gate / f"taken-{trial_id}")
                return
            except FileNotFoundError:   # another trial took it first
                continue
        time.sleep(0.01)


@dataclass
class Behaves:
    """Does what ``params['x']`` picks (the test enqueues the values): 0 fine, 1 raise,
    2 NaN, 3 os._exit(3), 4 SIGKILL itself the first time only (``marker`` file), 5 sleep long
    (with ``hold``: while that file exists)."""

    storage_url: str
    study_name: str
    marker: str = ""
    hold: str = ""

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        kind = int(params["x"])
        trial = trial_of(self.storage_url, self.study_name, trial_id)
        trial.report(1.0, 1)
        notify(1, {"loss": 1.0})
        if kind == 1:
            raise RuntimeError("boom from the objective")
        if kind == 2:
            return [math.nan]
        if kind == 3:
            os._exit(3)
        if kind == 4 and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == 5 and self.hold:
            while Path(self.hold).exists():
                time.sleep(0.02)
        elif kind == 5:
            time.sleep(600)
        return [float(kind)]


def suggest_kind(trial: optuna.trial.Trial) -> dict:
    return {"x": trial.suggest_int("x", 0, 5)}


@dataclass
class Curves:
    """Synthetic learning curves for pruning: trial with ``params['x'] = q`` reports
    ``q + 1/step`` for steps 1..``steps``; lower q is better, so the pruner should stop high q."""

    storage_url: str
    study_name: str
    pruner: PrunerSpec
    steps: int = 27

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        trial = trial_of(self.storage_url, self.study_name, trial_id, self.pruner, self.steps)
        q = params["x"]
        for step in range(1, self.steps + 1):
            value = q + 1.0 / step
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return [q + 1.0 / self.steps]


def suggest_q(trial: optuna.trial.Trial) -> dict:
    return {"x": trial.suggest_float("x", 0.0, 10.0)}


class _Cyclic:
    """A reference cycle (only the garbage collector frees it) holding a payload."""

    def __init__(self, payload) -> None:
        self.me, self.payload = self, payload
        _Cyclic.alive.add(self)


@dataclass
class LeavesGarbage:
    """Returns what the worker looked like when the trial started (``cycles_alive``: the cycles
    earlier trials left; with ``gpu``, CUDA memory allocated and reserved, the visible devices),
    then leaves a reference cycle holding ``gpu_mib`` MiB of CUDA memory (or a small CPU buffer).
    Each trial writes what it saw to ``out_dir/<trial_id>.json``."""

    out_dir: str
    gpu_mib: int = 0
    sleep_s: float = 0.0

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        import json as json_
        import weakref

        time.sleep(self.sleep_s)
        if not hasattr(_Cyclic, "alive"):
            _Cyclic.alive = weakref.WeakSet()
        seen = {"cycles_alive": len(_Cyclic.alive),
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
        payload = bytearray(1 << 20)
        if self.gpu_mib:
            import torch
            seen.update(devices=torch.cuda.device_count(),
                        allocated=torch.cuda.memory_allocated(), reserved=torch.cuda.memory_reserved())
            payload = torch.empty(self.gpu_mib << 18, dtype=torch.float32, device="cuda").normal_()
            if params["x"] < 0:    # the OOM case: ask for far more than any GPU has
                torch.empty(1 << 45, dtype=torch.float32, device="cuda")
        _Cyclic(payload)
        Path(self.out_dir, f"{trial_id}.json").write_text(json_.dumps(seen))
        return [float(params["x"])]


@dataclass
class HangsOnce:
    """``params['x'] == 5`` hangs for good (a deadlock: it waits on an event nobody sets), after
    starting a subprocess that would outlive it (as a data loader or compile worker would), whose
    pid it writes to ``pid_file``; any other x returns at once."""

    pid_file: str

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        import subprocess
        import threading

        if int(params["x"]) != 5:
            return [float(params["x"])]
        child = subprocess.Popen(["sleep", "600"])
        Path(self.pid_file).write_text(str(child.pid))
        threading.Event().wait()
        return [0.0]


@dataclass
class WaitsToBeStopped:
    """``params['x'] == 5`` writes its worker's pid to ``pid_file`` and waits (the test stops
    that worker with SIGSTOP); any other x returns at once."""

    pid_file: str

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        import threading

        if int(params["x"]) != 5:
            return [float(params["x"])]
        Path(self.pid_file).write_text(str(os.getpid()))
        threading.Event().wait()
        return [0.0]


@dataclass
class SeesEnv:
    """Writes the named environment variables its worker sees to ``out_dir/<trial_id>.json``."""

    out_dir: str
    names: tuple[str, ...]

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        import json as json_
        seen = {name: os.environ.get(name) for name in self.names}
        Path(self.out_dir, f"{trial_id}.json").write_text(json_.dumps(seen))
        return [params["x"] ** 2]


@dataclass
class FaultsOnce:
    """``params['x'] == 5`` fails once with the CUDA error a fatal GPU fault gives every trial of an
    MPS context (``marker`` records that it has), and returns at its rerun; any other x at once."""

    marker: str

    def __call__(self, trial_id: int, params: dict, notify) -> list[float]:
        if int(params["x"]) == 5 and not Path(self.marker).exists():
            Path(self.marker).write_text(str(trial_id))
            raise RuntimeError("CUDA error: an illegal memory access was encountered\n"
                               "CUDA kernel errors might be asynchronously reported")
        return [float(params["x"])]
