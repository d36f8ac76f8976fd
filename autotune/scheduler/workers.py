"""The scheduler's worker processes: starting one per slot, killing one, saying how one ended.

Owns: the 'spawn' start of a slot's worker (``CUDA_VISIBLE_DEVICES`` pinned, Ctrl-C left to the
parent, its own process group), stopping a worker (SIGTERM and a grace period for its exit
handlers, then SIGKILL of it with its subprocesses), and the words for a
worker's exit code. What runs inside the worker is ``_worker``; when to start or kill one is the
loop's decision.
Must not know about: the model, the study store.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna

from autotune.scheduler import _worker
from autotune.scheduler.gpus import Slot

_log = logging.getLogger("autotune")
TERM_GRACE_S = 5.0           # how long a cut trial's worker gets to exit after SIGTERM (then SIGKILL)


@dataclass
class Running:
    trial: optuna.trial.Trial
    started: float
    units: tuple[int, ...] = ()   # the slots the trial holds (a searched width: all N of them)
    share: float = 1.0            # GPUs it holds, for GPU-hours: its slots' shares summed


@dataclass
class Worker:
    slot: Slot
    process: Any
    conn: Any
    running: Running | None = None
    stopping: bool = False
    ready: bool = False          # sent "ready": its start-up (imports, unpickling) succeeded
    started: float = field(default_factory=time.monotonic)
    kill_at: float | None = None  # sent SIGTERM: when SIGKILL follows (monotonic)


def start_worker(slot: Slot, objective: Callable) -> Worker:
    """Start the worker process of ``slot`` with its GPU pinned and Ctrl-C ignored (the parent
    decides what a Ctrl-C means; a terminal sends it to the whole process group)."""
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    verbose = _log.isEnabledFor(logging.INFO)   # autotune -v: a failed warm-up's traceback too
    process = ctx.Process(target=_worker.main, args=(child_conn, objective, os.getpid(), verbose),
                          name=f"autotune-slot{slot.index}", daemon=True)
    saved_env = {name: os.environ.get(name) for name in slot.env}
    # The child inherits a blocked SIGINT (and ignores it once running); our own Ctrl-C arriving
    # meanwhile stays pending and is delivered to us when we unblock.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.environ.update(slot.env)   # CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS
    try:
        process.start()
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    child_conn.close()
    try:   # its own process group, so that a timeout kills its subprocesses too (the worker
        os.setpgid(process.pid, process.pid)   # does the same: whichever runs first wins)
    except OSError:
        pass
    return Worker(slot=slot, process=process, conn=parent_conn)


def terminate_worker(worker: Worker) -> None:
    """Ask a worker to exit now (SIGTERM, once; SIGCONT too, in case it is stopped): it runs its exit
    handlers, which free what the trial's libraries hold outside the process (named semaphores,
    e.g. the multiprocessing lock that tqdm creates under torch.compile; Inductor's compile
    workers), and exits without finishing the trial. ``kill_worker`` finishes the job."""
    worker.stopping = True
    if worker.kill_at is not None:
        return
    worker.kill_at = time.monotonic() + TERM_GRACE_S
    for sig in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.kill(worker.process.pid, sig)
        except OSError:
            pass   # gone already


def kill_worker(worker: Worker) -> None:
    """Stop a worker and its process group (its subprocesses: data loaders, Inductor's compile
    workers), and reap it: SIGTERM, up to ``TERM_GRACE_S`` to exit cleanly, then SIGKILL.

    A SIGKILL alone leaks the named semaphores that the worker registered with the resource
    tracker it shares with this process (which then warns "leaked semaphore objects" at exit)."""
    terminate_worker(worker)
    exited = multiprocessing.connection.wait([worker.process.sentinel],
                                             max(0.0, worker.kill_at - time.monotonic()))
    # (the sentinel, not ``exitcode``: a process that exits from a thread other than its main one,
    # as ``_worker._exit_cut`` does, can be waited for only once its other threads are gone too)
    if not exited and worker.process.exitcode is None:   # the stop after which a leaked-semaphore warning may follow
        _log.info("worker of slot %s did not exit within %.0f s of SIGTERM: killed", worker.slot.index,
                  TERM_GRACE_S)
    try:   # not reaped yet: the group's id cannot have been reused
        os.killpg(worker.process.pid, signal.SIGKILL)
    except OSError:
        pass   # not a group leader yet (killed just after start), or gone already
    worker.process.kill()
    worker.process.join(5.0)


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory killer?)" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {exitcode}"
