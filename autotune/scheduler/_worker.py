"""The worker process of one scheduler slot: runs the trials it is handed, one at a time.

Owns: the child side of the scheduler's pipe protocol, dying with the parent, and freeing GPU
memory between trials. It is started by ``loop.py`` with the 'spawn' start method and
``CUDA_VISIBLE_DEVICES`` already pinned to its slot's GPU.
Must not know about: the model, the study's sampler.

Protocol (tuples over a duplex ``multiprocessing`` pipe):
  parent -> worker  ``("run", trial_id, params, devices)`` | ``("stop",)``; ``devices``: the
                    ``CUDA_VISIBLE_DEVICES`` of the ranks the trial launches (a searched width:
                    the GPUs the scheduler placed it on), or None: the worker's own
  worker -> parent  ``("ready", pid)`` once started, then per trial
                    ``("notify", trial_id, step, metrics)``
                    ``("done", trial_id, outcome, payload, time_s, traceback)`` with outcome
                    ``complete`` (payload: values), ``pruned`` (None) or ``failed`` (payload: reason
                    text, one line); ``time_s``: where the trial's time in this process went (seconds
                    by part: the objective's ``last_time_s`` where it has one, plus ``teardown``), or
                    None; ``traceback``: the failed objective's traceback text, or None

The worker prints no traceback: the scheduler stores it on the trial and shows it with ``-v``.
It leads its own process group, so that the scheduler can kill it with its subprocesses.
A trial that the scheduler cuts (its time limit, --hard-stop, Ctrl-C) gets SIGTERM first: the worker
then runs its exit handlers, which free what outlives the process (named semaphores in /dev/shm,
compile worker pools), and exits; SIGKILL of its group follows after a grace period.

After "ready" the worker calls the objective's ``warm_up()``, if it has one (imports, GPU start),
while the parent opens the study (``start_workers`` starts workers first) and samples the first
trial; the part of it that the first trial waited for is that trial's ``worker_start``.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import math
import multiprocessing.util
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Iterator

from autotune.scheduler.policies import worker_exits_after

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills us when the parent dies; elsewhere (and as a backstop) a thread
    watches the parent pid."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="autotune-parent-watch", daemon=True).start()


def _exit_on_sigterm() -> None:
    """From now on SIGTERM makes the worker run its exit handlers and exit at once.

    The handlers run in a thread of their own, not in the signal handler: the trial is not unwound
    (an exception raised into it can land where it is swallowed, e.g. a weakref callback in the
    middle of a compile), and locks that the trial's thread holds are not waited for in that thread.
    The thread waits on an event that only the handler touches."""
    terminated = threading.Event()
    threading.Thread(target=_exit_cut, args=(terminated,), name="autotune-sigterm",
                     daemon=True).start()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: terminated.set())


def _exit_cut(terminated: threading.Event) -> None:
    """Once ``terminated`` is set: run the exit handlers that free what outlives the process, then
    exit. Multiprocessing's finalizers unlink the process's named semaphores (after a SIGKILL alone
    the resource tracker that the worker shares with the scheduler warns of them as leaked, e.g. the
    lock that tqdm creates under torch.compile) and stop its pools; ``atexit`` stops Inductor's
    compile workers. The interpreter's own teardown of torch takes seconds and frees nothing more."""
    terminated.wait()
    try:
        warnings.simplefilter("ignore")   # what the cut trial says on its way out is noise
        multiprocessing.util._exit_function()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(128 + signal.SIGTERM)


def _free_gpu_memory() -> None:
    """Collect the finished trial's garbage and hand its cached GPU memory back to the driver.

    The survivors (imported modules, their caches) are then frozen out of later collections, so
    that each trial's collection scans only that trial's objects: a full collection over torch,
    Optuna and SQLAlchemy took ~0.17 s a trial (2-core CPU), the worker's largest cost per trial."""
    gc.collect()
    gc.freeze()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except RuntimeError:
            pass  # a broken CUDA context: the worker exits after reporting (see main)


def _reason(exc: BaseException) -> str:
    """One line for ``fail_reason``: the exception type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def run_one(objective: Callable, trial_id: int, params: dict, conn: Any
            ) -> tuple[str, Any, str | None]:
    """Run one trial: ``(outcome, payload, traceback text of a raised exception or None)``."""
    import optuna  # here, not at the top: the worker's start-up stays light until a trial runs

    def notify(step: int, metrics: dict) -> None:
        conn.send(("notify", trial_id, int(step), dict(metrics)))

    try:
        values = objective(trial_id, params, notify)
    except optuna.TrialPruned:
        return "pruned", None, None
    except Exception as exc:  # noqa: BLE001 - any failure of a trial is that trial's, not ours
        return "failed", _reason(exc), traceback.format_exc()
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        return "failed", f"objective returned {values!r}, not a list of numbers ({exc})", None
    if not all(math.isfinite(v) for v in values):
        return "failed", f"objective returned non-finite values {values}", None
    return "complete", values, None


@contextlib.contextmanager
def _visible_devices(devices: str | None) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES`` set to ``devices`` for one trial (the ranks it starts inherit it;
    CUDA in this process, if started, keeps its own GPU), then back to the worker's."""
    if devices is None:
        yield
        return
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _warm_up(objective: Callable, verbose: bool) -> None:
    warm_up = getattr(objective, "warm_up", None)
    if warm_up is None:
        return
    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001 - the first trial meets the same problem and reports it
        if verbose:
            traceback.print_exc(file=sys.stderr)
        else:
            print(f"autotune worker: warm-up failed: {_reason(exc)} (autotune -v ... for the "
                  "traceback)", file=sys.stderr)


def main(conn: Any, objective: Callable, parent_pid: int, verbose: bool = False) -> None:
    """Entry point of the worker process; ``verbose``: the user asked for tracebacks (``-v``)."""
    _die_with_parent(parent_pid)
    try:
        os.setpgid(0, 0)   # the scheduler kills a timed-out trial's whole group
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_on_sigterm()
    conn.send(("ready", os.getpid()))
    tick = time.perf_counter()
    _warm_up(objective, verbose)
    start_s = time.perf_counter() - tick     # counted in the first trial's time: it waited for it
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        _, trial_id, params, devices = message
        started = time.perf_counter()
        with _visible_devices(devices):
            outcome, payload, trace = run_one(objective, trial_id, params, conn)
        tick = time.perf_counter()
        _free_gpu_memory()
        time_s = dict(getattr(objective, "last_time_s", None) or {"objective": tick - started})
        time_s["teardown"] = round(time.perf_counter() - tick, 4)
        if start_s is not None:
            time_s["worker_start"], start_s = round(start_s, 4), None
        conn.send(("done", trial_id, outcome, payload, time_s, trace))
        if worker_exits_after(outcome, payload):
            return  # a CUDA error can poison the context: let the scheduler start a fresh process
