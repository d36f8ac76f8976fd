"""A seeded synthetic family of learning curves with a second objective, for bench/mo_pruning.py.

A configuration (``width``, ``depth``, ``lr``, ``dropout``) fixes a curve
``val_loss(step) = a + b * step ** -c`` (plus Gaussian noise at each evaluation) and a
``latency_ms`` that the configuration alone decides. Larger models reach a lower ``a`` but cost
latency and learn more slowly at first (smaller ``c``), so curves cross and the Pareto front runs
from small, fast, worse models to large, slow, better ones. The learning rate has a
width-dependent optimum: too low learns slowly, off-optimum raises the floor.

``learning_curve`` is a user objective (``fn(params, report) -> metrics``) that autotune runs like
any other: it reports every ``eval_every`` steps, does a fixed amount of arithmetic per step (no
sleep, so compute is counted in steps) and returns ``steps_trained`` with its metrics.
Must not know about: autotune (workers import it by name), Optuna.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Mapping

import numpy as np

SPACE = {"width": {"type": "int", "low": 64, "high": 1024, "log": True},
         "depth": {"type": "int", "low": 2, "high": 12},
         "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
         "dropout": {"type": "float", "low": 0.0, "high": 0.5}}
NOISE_SD = 0.02          # of val_loss at each evaluation


def latency_ms(width: int, depth: int) -> float:
    """What the configuration costs at deploy time: linear in depth, super-linear in width."""
    return depth * (0.1 + 0.05 * (width / 64) ** 1.2)


def curve_params(width: float, depth: float, lr: float, dropout: float) -> tuple[float, float, float]:
    """``(a, b, c)`` of ``val_loss(step) = a + b * step ** -c``; numpy arrays work too."""
    size = np.log2(np.asarray(width) / 64) / 4          # 0 .. 1
    capacity = 0.6 * size + 0.4 * (np.asarray(depth) - 2) / 10
    lr_dev = np.log10(lr) - (-2.0 - 0.8 * size)         # decades from the width's best lr
    a = 1.0 + 1.2 * (1 - capacity) ** 1.5 + 0.4 * lr_dev ** 2 + 0.3 * (dropout - 0.1) ** 2
    b = 2.0 + 0.5 * capacity
    speed = 1 / (1 + np.exp(-2.0 * (np.log10(lr) + 2.5)))   # a higher lr learns faster early
    c = (0.2 + 0.5 * speed) * (1 - 0.3 * capacity) * (1 - 0.5 * dropout)
    return a, b, c


def noise_free_loss(params: Mapping[str, Any], step: float) -> float:
    a, b, c = curve_params(params["width"], params["depth"], params["lr"], params["dropout"])
    return float(a + b * step ** -c)


def _rng(params: Mapping[str, Any]) -> np.random.Generator:
    """Noise that the configuration and ``noise_seed`` fix (the same trial reruns identically)."""
    key = repr([(k, params[k]) for k in (*SPACE, "noise_seed")]).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def _work(units: int, state: np.ndarray) -> np.ndarray:
    """A fixed amount of arithmetic standing in for one training step (``units`` 64x64 products)."""
    for _ in range(units):
        state = np.tanh(state @ state.T * (1.0 / 64))
    return state


def learning_curve(params: Mapping[str, Any], report: Callable[[int, Mapping[str, float]], bool]) -> dict:
    """The user objective: ``steps`` steps, a report every ``eval_every``; stops when told."""
    steps, eval_every = int(params["steps"]), int(params["eval_every"])
    work_units = int(params.get("work_units", 0))
    latency = latency_ms(params["width"], params["depth"])
    rng, state = _rng(params), np.eye(64)
    loss, step = math.inf, 0
    while step < steps:
        step += 1
        state = _work(work_units, state)
        if step % eval_every and step != steps:
            continue
        loss = noise_free_loss(params, step) + NOISE_SD * float(rng.standard_normal())
        if not report(step, {"val_loss": loss, "latency_ms": latency}):
            break
    return {"val_loss": loss, "latency_ms": latency, "steps_trained": step}
