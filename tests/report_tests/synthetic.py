"""Synthetic studies shaped like autotune's: the params, curves and user attrs real trials store.

Built with ``optuna.create_trial`` / ``study.add_trials`` so that thousands of trials take seconds.
Used by the report tests and by ``bench/report_speed.py``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-4, 3e-3, log=True),
    "top_k": IntDistribution(1, 4),
    "num_experts": CategoricalDistribution([4, 8, 16]),
    "keep_ratio": FloatDistribution(0.2, 0.8),
    "window": IntDistribution(32, 256, step=32),
}
N_LAYERS = 2
WARM_SOURCE = "moe-small-v0"


def _params(rng: np.random.Generator) -> dict:
    return {
        "lr": float(math.exp(rng.uniform(math.log(1e-4), math.log(3e-3)))),
        "top_k": int(rng.integers(1, 5)),
        "num_experts": int(rng.choice([4, 8, 16])),
        "keep_ratio": float(rng.uniform(0.2, 0.8)),
        "window": int(rng.choice(range(32, 257, 32))),
    }


def _loss(p: dict, step: int, steps: int, rng: np.random.Generator) -> float:
    """Falls with steps; best near lr=1e-3, keep_ratio high, top_k 2."""
    quality = abs(math.log10(p["lr"]) + 3.0) + 0.5 * (0.8 - p["keep_ratio"]) + 0.1 * abs(p["top_k"] - 2)
    return float(0.5 + quality + 2.0 * math.exp(-3.0 * step / steps) + 0.02 * rng.standard_normal())


def _metrics(p: dict, loss: float, rng: np.random.Generator) -> dict:
    load = rng.dirichlet(np.full(p["num_experts"], 2.0), size=N_LAYERS)   # (n_layers, num_experts)
    return {
        "val_loss": loss,
        "accuracy": float(max(0.0, 1.0 - loss / 3.0)),
        "latency_ms": float(2.0 + 4.0 * p["keep_ratio"] + 0.5 * p["top_k"] + 0.1 * rng.standard_normal()),
        "tokens_per_s": float(1e5 / (1.0 + p["top_k"])),
        "expert_load_cv": float(load.std(axis=1).mean() * p["num_experts"]),
        "keep_ratio_used": float(p["keep_ratio"] * rng.uniform(0.9, 1.0)),
        "expert_load": load.round(4).tolist(),
    }


def build_study(storage: str | optuna.storages.BaseStorage, name: str, n_trials: int, *,
                objectives: int = 1, steps: int = 10, seed: int = 0, warm: int = 3) -> optuna.Study:
    """A study of ``n_trials``: about 70 % COMPLETE, 20 % PRUNED (short curves), 10 % FAIL,
    the first ``warm`` ones warm-started from ``moe-small-v0``. ``objectives`` 1: val_loss;
    2: val_loss and latency_ms (both minimized)."""
    rng = np.random.default_rng(seed)
    directions = ["minimize"] * objectives
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_loss", "latency_ms"][:objectives])
    if warm:
        study.set_user_attr("warm_start", {"strategy": "enqueue", "sources": {WARM_SOURCE: warm}})
    trials = []
    for i in range(n_trials):
        p = _params(rng)
        kind = rng.uniform()
        state = TrialState.COMPLETE if kind < 0.7 else TrialState.PRUNED if kind < 0.9 else TrialState.FAIL
        if i < 3:                       # the first trials are always complete, so every view has data
            state = TrialState.COMPLETE
        last = steps if state == TrialState.COMPLETE else int(rng.integers(1, steps // 2 + 1))
        curve = {s * 50: _loss(p, s, steps, rng) for s in range(1, last + 1)}
        attrs: dict = {"gpu": f"gpu{i % 2}"}
        if i < warm:
            attrs["warm_start"] = WARM_SOURCE
        values = None
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "CUDA out of memory" if i % 2 else "NaN loss at step 100"
            curve = {}
        else:
            metrics = _metrics(p, curve[max(curve)], rng)
            attrs["metrics"] = metrics
            attrs.update({k: v for k, v in metrics.items() if not isinstance(v, list)})
            if state == TrialState.COMPLETE:
                values = [metrics["val_loss"], metrics["latency_ms"]][:objectives]
        trials.append(optuna.trial.create_trial(
            state=state, params=p, distributions=DISTRIBUTIONS, values=values,
            intermediate_values=curve, user_attrs=attrs))
    study.add_trials(trials)
    return study
