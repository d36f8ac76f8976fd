"""CUDA MPS for the trials that share a GPU (``parallel.mps``).

Without MPS the trials of one GPU (``trials_per_gpu`` above 1) each own a CUDA context and the GPU
time-slices between them: a small model's kernels fill a fraction of the SMs and the rest wait for
the next slice. Through an MPS server their kernels run side by side.

Owns: a private MPS control daemon for one run (its own pipe and log folders in a temporary
folder, so it neither joins nor disturbs a daemon someone else runs on the machine), the check that
a CUDA context really opens through it (a child process, ``libcuda`` through ctypes: no torch), the
environment the workers get to reach it, and its stop at the end of the run; also the daemons that
runs killed without their ``finally`` (SIGKILL) left behind: each folder names its run's process,
and the next run that starts MPS quits the daemons whose run is gone.
Must not know about: Optuna, the model.

The price, said in the README: MPS puts the clients of a GPU in one shared context, so a fatal GPU
fault in one trial (an illegal memory access, a device-side assert; not an out-of-memory error)
fails every trial running on that GPU with a CUDA error (each worker then exits and the scheduler
starts a fresh one, as after any CUDA error; on a shared context the scheduler retries those
trials, ``policies.gpu_fault_retried``).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

_log = logging.getLogger("autotune.scheduler")

CONTROL = "nvidia-cuda-mps-control"
START_TIMEOUT_S = 20.0
PREFIX = "autotune-mps-"
OWNER = "owner.pid"    # in the run's folder: the process id of the run that started the daemon
# Opens a CUDA context on the first visible GPU through the driver API and exits 0, or prints why not.
_CHECK = r"""
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as e:
    sys.exit(f"no libcuda: {e}")
dev, ctx = ctypes.c_int(), ctypes.c_void_p()
for step, rc in (("cuInit", lambda: cuda.cuInit(0)), ("cuDeviceGet", lambda: cuda.cuDeviceGet(ctypes.byref(dev), 0)),
                 ("cuCtxCreate", lambda: cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev))):
    code = rc()
    if code:
        sys.exit(f"{step} returned CUDA error {code}")
cuda.cuCtxDestroy_v2(ctx)
"""


@dataclass
class Mps:
    """The run's MPS daemon: ``env`` for the workers (empty when MPS is off or failed to start),
    ``note`` for the run's plan line."""

    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    folder: str | None = None

    def stop(self) -> None:
        """Quit the daemon (its server ends with it) and remove its folders; safe to call twice."""
        if self.folder is None:
            return
        if self.env:
            _quit(self.env)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self.env = None, {}


def _env_of(folder: str) -> dict[str, str]:
    return {"CUDA_MPS_PIPE_DIRECTORY": os.path.join(folder, "pipe"),
            "CUDA_MPS_LOG_DIRECTORY": os.path.join(folder, "log")}


def _quit(env: dict[str, str]) -> None:
    try:
        subprocess.run([CONTROL], input="quit\n", text=True, capture_output=True,
                       env={**os.environ, **env}, timeout=START_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log.warning("MPS daemon did not quit: %s", exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process
    return True


def quit_orphans(tmp: str | None = None) -> list[str]:
    """Quit the MPS daemons of earlier runs that were killed before they could (their folder's
    ``owner.pid`` names a process that is gone) and remove their folders; the folders quit."""
    tmp = tmp or tempfile.gettempdir()
    quit = []
    try:
        names = sorted(n for n in os.listdir(tmp) if n.startswith(PREFIX))
    except OSError:
        return quit
    for name in names:
        folder = os.path.join(tmp, name)
        try:
            if os.stat(folder).st_uid != os.getuid():
                continue
            with open(os.path.join(folder, OWNER)) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue    # not ours, or a run still writing it
        if _alive(owner):
            continue
        _quit(_env_of(folder))
        shutil.rmtree(folder, ignore_errors=True)
        _log.info("quit the MPS daemon that a killed run (process %d) left in %s", owner, folder)
        quit.append(folder)
    return quit


def start_mps(wanted: bool, shared_gpus: list[str]) -> Mps:
    """Start a private MPS daemon when ``wanted`` and some GPU is shared by several slots
    (``shared_gpus``: their CUDA_VISIBLE_DEVICES entries), and check that a context opens through
    it on each. When it cannot run (no ``nvidia-cuda-mps-control``, the daemon or the check fails),
    the run goes on time-sliced and ``note`` says why: a study file asking for MPS still runs on a
    machine without it."""
    if not wanted:
        return Mps()
    if not shared_gpus:
        return Mps(note="MPS not used: no GPU runs several trials")
    if shutil.which(CONTROL) is None:
        return Mps(note=f"MPS asked for, but {CONTROL} is not on PATH: GPUs time-sliced")
    quit_orphans()
    folder = tempfile.mkdtemp(prefix=PREFIX)
    env = _env_of(folder)
    for path in env.values():
        os.makedirs(path, exist_ok=True)
    with open(os.path.join(folder, OWNER), "w") as f:
        f.write(str(os.getpid()))
    mps = Mps(env=env, folder=folder)
    # The daemon sees every GPU (the slots' CUDA_VISIBLE_DEVICES entries are the machine's own
    # indices or UUIDs; a client's entry counts among the devices its server sees).
    daemon_env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    try:
        subprocess.run([CONTROL, "-d"], env={**daemon_env, **env}, capture_output=True, text=True,
                       timeout=START_TIMEOUT_S, check=True)
        for gpu in shared_gpus:
            check = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                                   env={**os.environ, **env, "CUDA_VISIBLE_DEVICES": gpu},
                                   timeout=START_TIMEOUT_S)
            if check.returncode:
                raise RuntimeError(f"GPU {gpu}: {(check.stderr or check.stdout).strip()[-300:]}")
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        why = exc.stderr.strip()[-300:] if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else exc
        mps.stop()
        return Mps(note=f"MPS asked for, but it did not start ({why}): GPUs time-sliced")
    mps.note = f"MPS: the trials of each GPU run side by side ({len(shared_gpus)} GPU(s))"
    return mps
