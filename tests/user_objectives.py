"""User objectives (``fn(params, report) -> metrics``) that the CLI and end-to-end tests run."""
from __future__ import annotations

import math
import os
import time


def quadratic(params, report):
    """A learning curve that decays towards (x - 0.3)^2; reports every step."""
    x = float(params.get("x", params.get("lr", 0.5)))
    target = (x - 0.3) ** 2
    steps = int(params.get("steps", 5))
    loss = 1.0
    for step in range(steps):
        loss = target + 1.0 / (step + 2)
        if not report(step, {"val_loss": loss}):
            return {"val_loss": loss}
        time.sleep(float(params.get("sleep", 0.0)))
    return {"val_loss": target, "accuracy": 1 - target, "latency_ms": 1 + x}


def omits_metric(params, report):
    return {"accuracy": 0.5}


def returns_nan(params, report):
    return {"val_loss": math.nan}


def raises(params, report):
    raise RuntimeError("boom from the user's objective")


def exits(params, report):
    os._exit(3)


def held(params, report):
    """Reports step 0, then says it runs (touches the file ``started``, for tests to wait on) and
    keeps running while the file ``hold`` exists."""
    from pathlib import Path
    report(0, {"val_loss": 1.0})
    Path(params["started"]).touch()
    while Path(params["hold"]).exists():
        time.sleep(0.02)
    return {"val_loss": 0.5}


def first_two_then_wait(params, report):
    """The first two trials (in the folder ``params['gate']``) finish at once; later ones wait
    until the file ``release`` appears there, so that a test can kill the run at a known state:
    two trials COMPLETE, the others RUNNING."""
    from pathlib import Path

    gate = Path(params["gate"])
    for ticket in range(2):
        try:
            (gate / f"ticket-{ticket}").open("x").close()     # exclusive: one trial per ticket
            break
        except FileExistsError:
            continue
    else:
        while not (gate / "release").exists():
            time.sleep(0.05)
    return quadratic({**params, "sleep": 0.0}, report)
