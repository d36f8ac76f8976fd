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
