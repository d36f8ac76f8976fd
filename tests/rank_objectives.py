"""Objectives run as several ranks (``parallel.procs_per_trial``) by the distributed tests."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank()


def one_rank_dies_once(params, report):
    """Rank 1 of the first trial kills itself (SIGKILL) at step 1; later trials run through.
    Each rank reports its own throughput and memory, for the combined metrics."""
    marker, rank = Path(params["marker"]), _rank()
    for step in range(int(params.get("steps", 3))):
        report(step, {"val_loss": 1.0})
        if step == 1 and rank == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return {"val_loss": 1.0, "tokens_per_s": 5.0, "peak_mem_mb": 10.0 + rank}


def worse_after_the_first(params, report):
    """The first trial's curve is low, later trials' high (a median pruner stops them). Each rank
    writes the last step it ran to ``log_dir/{first|later}-rank{r}``."""
    marker, rank = Path(params["marker"]), _rank()
    first = not marker.exists()
    base = 0.0 if first else 10.0
    last, loss = -1, base
    for step in range(int(params.get("steps", 6))):
        last, loss = step, base + 1.0 / (step + 1)
        if not report(step, {"val_loss": loss}):
            break
    Path(params["log_dir"], f"{'first' if first else 'later'}-rank{rank}").write_text(str(last))
    if first and rank == 0:
        marker.touch()
    return {"val_loss": loss}


def rank_one_runs_out_of_memory(params, report):
    import torch
    if _rank() == 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    report(0, {"val_loss": 1.0})     # rank 0 waits in the broadcast until it is stopped
    return {"val_loss": 1.0}


def one_rank_hangs_once(params, report):
    """Rank 1 of the first trial writes its pid to ``marker`` and hangs (rank 0 waits for it in the
    first report); later trials run through."""
    import time
    marker, rank = Path(params["marker"]), _rank()
    if rank == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    report(0, {"val_loss": 1.0})
    return {"val_loss": 1.0}


def compile_auto_on_rank_timings(params, report):
    """The built-in objective with ``compile: auto`` where rank r times its eager steps at
    ``eager_step_s[r]`` seconds (as if on CUDA; compiling only marks the trainer, no real compile
    on the CPU). Each rank writes whether it compiled to ``log_dir/compiled-rank{r}``."""
    import autotune.train as train
    from autotune.objective import moe_lm
    rank, params = _rank(), dict(params)
    eager_step_s, log_dir = params.pop("eager_step_s"), params.pop("log_dir")
    train.auto_compiles = lambda device: True
    train._StepClock.step_s = lambda self, mode: eager_step_s[rank] if mode == "eager" else None
    train._Trainer.compile = lambda self: setattr(self, "compiled", True)
    result = moe_lm({**params, "compile": "auto"}, report)
    Path(log_dir, f"compiled-rank{rank}").write_text(str(result["compile"]["compiled"]))
    return result


def counts_gradient_syncs(params, report):
    """The built-in objective; each rank counts DDP's all-reduces of its first gradient bucket (a
    comm hook) and writes the count to ``log_dir/syncs-rank{r}``."""
    import autotune.train as train
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from autotune.objective import moe_lm
    rank, params = _rank(), dict(params)
    log_dir, syncs, wrap = params.pop("log_dir"), [], train.wrap_model

    def all_reduce_counted(group, bucket):
        syncs.append(bucket.index())
        return allreduce_hook(group, bucket)

    def wrap_counted(model, sharding="ddp"):
        wrapped = wrap(model, sharding)
        wrapped.register_comm_hook(None, all_reduce_counted)
        return wrapped

    train.wrap_model = wrap_counted
    result = moe_lm(params, report)
    Path(log_dir, f"syncs-rank{rank}").write_text(str(syncs.count(0)))
    return result


def reports_its_world(params, report):
    """Reports the world size it runs in (1 outside a multi-rank trial) and whether the searched
    width reached it as a parameter (it must not)."""
    from autotune.distributed import world
    report(0, {"val_loss": 1.0})
    return {"val_loss": 1.0, "ranks_seen": world()[1],
            "width_in_params": int("procs_per_trial" in params)}
