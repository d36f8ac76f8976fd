"""Trials that span several processes: one trial run as N ranks, launched the way torchrun does.

Owns, on the launching side (the slot's worker process): starting a trial's ranks through torch's
elastic agent (``LaunchConfig`` + ``elastic_launch``: a local c10d rendezvous on a free port of
127.0.0.1, no restarts), and the channel from the ranks: rank 0's reports (answered by the
``report`` callback the launcher is handed), progress, and each rank's error. A rank that fails
(exception, signal, out of memory) ends the launch: the agent stops the other ranks and the trial
fails with ``RankFailed`` naming the rank and its error.
On the rank side: the process group (NCCL with one GPU per rank, or gloo on the CPU), this rank's
share of each global batch (``shard_batches``), data-parallel wrapping (``wrap_model``: DDP, or
FSDP2 ``fully_shard``), gradients synchronised once an optimizer step (``gradient_sync``), metrics
combined over the ranks (``combine_metrics``), and rank 0's decisions (pruning; ``compile: auto``,
``rank0_decides``) broadcast to every rank, so that all ranks run the same code.
Must not know about: Optuna (the launcher calls a plain ``report(step, metrics) -> keep_going``),
the scheduler (it kills a hung trial's whole process group, ranks included), YAML.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

_log = logging.getLogger("autotune")

BACKENDS = ("gloo", "nccl")
SUMMED = ("tokens_per_s",)                         # combined over ranks: the sum,
AVERAGED = ("train_loss", "mfu")                   # the mean (each rank's loss is on its share),
LARGEST = ("peak_mem_mb", "step_ms")               # the largest (the fullest / slowest rank)
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


class RankFailed(RuntimeError):
    """A rank of a multi-process trial failed; the other ranks were stopped."""


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a multi-rank trial."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- the launching side -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OnRanks:
    """``fn(config, report, **kwargs)`` run as ``ranks`` processes; called like ``fn`` itself.

    Each rank calls ``fn`` with the same ``config`` and a report that combines the metrics over the
    ranks, hands them to this side's ``report`` (rank 0 only) and returns its answer on every rank.
    ``progress`` (keyword), if given, hears rank 0's progress. Returns rank 0's result, with
    ``world_size`` and the metrics combined over ranks.
    """

    fn: Callable[..., Mapping[str, Any]]
    ranks: int
    backend: str = "gloo"

    def __call__(self, config: Mapping[str, Any], report: Callable, **kwargs: Any) -> dict:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        progress = kwargs.pop("progress", None)
        ctx = multiprocessing.get_context("spawn")
        channel, replies = ctx.Queue(), ctx.Queue()
        listener = _Listener(channel, replies, report, progress)
        launch = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=self.ranks, run_id=uuid.uuid4().hex,
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
            monitor_interval=0.1, start_method="spawn")
        listener.start()
        try:
            with _may_start_children():
                results = elastic_launch(launch, _rank_main)(
                    self.fn, dict(config), kwargs, self.backend, channel, replies,
                    progress is not None)
        except ChildFailedError as exc:
            listener.stop()
            raise RankFailed(listener.failure_reason(exc, self.ranks)) from None
        finally:
            listener.stop()
        if listener.error is not None:   # the report callback itself failed (e.g. the store)
            raise listener.error
        return results[0]


class _Listener(threading.Thread):
    """The launching side of the ranks' channel: ``("report", step, metrics)`` from rank 0,
    answered on ``replies``; ``("progress", step, metrics)``; ``("error", rank, reason)``."""

    def __init__(self, channel: Any, replies: Any, report: Callable, progress: Callable | None):
        super().__init__(name="autotune-ranks", daemon=True)
        self.channel, self.replies = channel, replies
        self.report, self.progress = report, progress
        self.errors: dict[int, str] = {}      # rank -> its error, in the order they came
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            message = self.channel.get()
            if message[0] == "stop":
                return
            if message[0] == "error":
                self.errors.setdefault(message[1], message[2])
            elif message[0] == "progress":
                self._call(self.progress, message[1], message[2])
            elif message[0] == "report":
                keep = self._call(self.report, message[1], message[2])
                self.replies.put(keep is not False and self.error is None)

    def _call(self, fn: Callable, step: int, metrics: dict) -> Any:
        try:
            return fn(step, metrics)
        except Exception as exc:  # noqa: BLE001 - raised by OnRanks once the ranks have stopped
            self.error = self.error or exc
            return False

    def stop(self) -> None:
        if self.is_alive():
            self.channel.put(("stop",))
            self.join()

    def failure_reason(self, exc: Any, ranks: int) -> str:
        """One line: the rank that failed first and why. A rank that died without an error of its
        own (a signal: killed, out of host memory) is the cause; the others' errors (a peer gone
        from a collective) follow from it."""
        silent = {rank: failure.exitcode for rank, failure in exc.failures.items()
                  if rank not in self.errors and failure.exitcode is not None}
        for rank, code in sorted(silent.items()):
            return f"rank {rank} of {ranks}: {_describe_exit(code)}"
        for rank, reason in self.errors.items():
            return f"rank {rank} of {ranks}: {reason}"
        return f"ranks failed: {exc}"


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _may_start_children:
    """A scheduler's worker is a daemon process, and ``multiprocessing`` refuses to let a daemon
    start children; the ranks die with it anyway (``PR_SET_DEATHSIG``, its process group), so the
    flag is lifted while the ranks start."""

    def __enter__(self) -> None:
        config = multiprocessing.current_process()._config
        self.saved = config.pop("daemon", None)

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            multiprocessing.current_process()._config["daemon"] = self.saved


# --- the rank side ------------------------------------------------------------------------------

def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def _rank_main(fn: Callable, config: dict, kwargs: dict, backend: str, channel: Any,
               replies: Any, with_progress: bool) -> dict | None:
    """A rank's entry point (started by the elastic agent, ``RANK`` / ``WORLD_SIZE`` set)."""
    import torch
    import torch.distributed as dist

    _die_with_parent()
    rank, ranks = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        _split_threads(ranks)
    try:
        dist.init_process_group(backend)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
        report = _RankReport(rank, channel, replies, device)
        if with_progress and rank == 0:
            kwargs = {**kwargs, "progress": lambda step, m: channel.put(("progress", step, dict(m)))}
        result = dict(fn(config, report, **kwargs))
        result = combine_metrics(result, device)
        result["world_size"] = ranks
        return result if rank == 0 else None
    except BaseException as exc:
        text = str(exc).strip().splitlines()
        channel.put(("error", rank, f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__))
        if os.environ.get("AUTOTUNE_RANK_TRACEBACKS"):
            traceback.print_exc()
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _split_threads(ranks: int) -> None:
    """CPU ranks share the slot's threads (``OMP_NUM_THREADS``, else the usable cores)."""
    import torch
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    each = max(1, threads // ranks)
    os.environ["OMP_NUM_THREADS"] = str(each)   # the trainer's configure_threads reads it
    torch.set_num_threads(each)


class _RankReport:
    """A rank's ``report``: metrics combined over the ranks; rank 0 asks the launcher; every rank
    returns rank 0's answer (a broadcast, so that all stop at the same step)."""

    def __init__(self, rank: int, channel: Any, replies: Any, device: Any) -> None:
        self.rank, self.channel, self.replies, self.device = rank, channel, replies, device

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> bool:
        import torch
        import torch.distributed as dist
        metrics = combine_metrics(metrics, self.device)
        keep = True
        if self.rank == 0:
            self.channel.put(("report", int(step), metrics))
            keep = bool(self.replies.get())
        flag = torch.tensor([1 if keep else 0], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def combine_metrics(metrics: Mapping[str, Any], device: Any = None) -> dict:
    """``metrics`` over all ranks (a collective: every rank calls it): ``SUMMED`` ones summed,
    ``AVERAGED`` averaged, ``LARGEST`` the largest; the rest as this rank has them."""
    import torch
    import torch.distributed as dist
    out = dict(metrics)
    ranks = dist.get_world_size()
    added = SUMMED + AVERAGED
    names = added + LARGEST
    here = [isinstance(out.get(n), (int, float)) and not isinstance(out.get(n), bool) for n in names]
    values = torch.tensor([float(out[n]) if ok else 0.0 for n, ok in zip(names, here)],
                          dtype=torch.float64, device=device)
    summed, largest = values[:len(added)].clone(), values[len(added):].clone()
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    for name, value, ok in zip(names, summed.tolist() + largest.tolist(), here):
        if ok:
            out[name] = value / ranks if name in AVERAGED else value
    return out


def shard_batches(batches: Iterator[Any]) -> Iterator[Any]:
    """This rank's share of each global batch: rank r of N takes the r-th of N near-equal slices
    of its sequences (all ranks read the same batches: same data, same seed). Alone: unchanged."""
    rank, ranks = world()
    if ranks == 1:
        yield from batches
        return
    for batch in batches:
        yield shard_batch(batch, rank, ranks)


def shard_batch(batch: Any, rank: int, ranks: int) -> Any:
    """Rank ``rank``'s slice of ``batch`` (``inputs`` / ``targets``: [B, T]); ``num_tokens`` (and
    ``pairs``, where the batch has them) its share of the batch's real tokens, by sequences."""
    size = batch.inputs.shape[0]
    if size < ranks:
        raise ValueError(f"a batch of {size} sequence(s) cannot be split over {ranks} ranks; "
                         "raise batch_size (or tokens_per_batch)")
    lo, hi = rank * size // ranks, (rank + 1) * size // ranks
    tokens = batch.num_tokens * (hi - lo) // size
    pairs = getattr(batch, "pairs", None)
    extra = {} if pairs is None else {"pairs": pairs * (hi - lo) / size}
    return type(batch)(batch.inputs[lo:hi], batch.targets[lo:hi], tokens, **extra)


def wrap_model(model: Any, sharding: str = "ddp") -> Any:
    """The module a training step calls: ``model`` itself alone; across ranks DDP around it
    (``model`` is left as it was, for evaluation), or FSDP2: ``fully_shard`` on each block, then
    on the whole, in place (the model's attributes stay; parameters become sharded DTensors, so the
    optimizer must be made after this)."""
    _, ranks = world()
    if ranks == 1:
        return model
    import torch
    if sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in getattr(model, "blocks", None) or []:
            fully_shard(block)
        fully_shard(model)
        return model
    device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def gradient_sync(step_model: Any, last: bool) -> Any:
    """The context of one micro-batch's forward and backward: under DDP, ``no_sync()`` for all but
    the ``last`` micro-batch of an optimizer step, so that gradients are all-reduced once a step
    (they accumulate locally until then; the sum is the same). Alone, or FSDP2: nothing."""
    import torch
    if last or not isinstance(step_model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return step_model.no_sync()


def rank0_decides(decision: T) -> T:
    """Rank 0's ``decision`` on every rank (a collective: every rank calls it, with its own). For
    choices made from measurements that differ between ranks (``compile: auto`` from each rank's
    step times): ranks that chose differently would run different code, and DDP / FSDP could
    deadlock or diverge. Alone: ``decision``."""
    _, ranks = world()
    if ranks == 1:
        return decision
    import torch.distributed as dist
    box = [decision]
    dist.broadcast_object_list(box, src=0)     # NCCL: through this rank's current GPU
    return box[0]


def model_device(model: Any) -> Any:
    return next(model.parameters()).device


def full_tensor(value: Any) -> Any:
    """A DTensor's (FSDP2: a gradient norm) full value; any other tensor as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
