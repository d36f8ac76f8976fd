"""Genomes for evolutionary operators: Optuna distributions <-> vectors.

Owns: the union search space of a study's trials (conditional parameters included) and the codec
that turns a parameter dict into a genome and back. Numeric genes live in [0, 1] (log-scaled
parameters in log space; ints and stepped floats widened by half a step at each end so that every
value gets an equal share); categorical genes are choice indices. Genes a trial lacks (inactive
conditional parameters) are drawn at random, so operators always see full genomes.
Must not know about: selection, surrogates, the model, the scheduler.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial


def union_search_space(trials: Iterable[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Every non-constant parameter any trial used, with its most recent distribution."""
    space: dict[str, BaseDistribution] = {}
    for trial in trials:
        space.update(trial.distributions)
    return {name: space[name] for name in sorted(space) if not space[name].single()}


_PROPOSAL_KEY = "autotune:proposal"


def remember_proposal(study: Any, trial: FrozenTrial, params: dict[str, Any]) -> None:
    """Store a relative proposal on its trial, so that other workers see it before it is suggested."""
    try:
        text = json.dumps(params)
    except (TypeError, ValueError):
        return   # choices JSON cannot hold: the suggested params will show soon enough
    study._storage.set_trial_system_attr(trial._trial_id, _PROPOSAL_KEY, text)


def proposed_params(trial: FrozenTrial) -> dict[str, Any]:
    """What a trial was proposed (running trials) merged with what it suggested."""
    text = trial.system_attrs.get(_PROPOSAL_KEY)
    if not text or trial.state.is_finished():
        return trial.params
    try:
        return {**json.loads(text), **trial.params}
    except json.JSONDecodeError:
        return trial.params


def taken_params(study: Any, trial: FrozenTrial) -> list[dict[str, Any]]:
    """Parameters of every other trial, running or finished: proposals to avoid repeating."""
    trials = study._get_trials(deepcopy=False, use_cache=False)
    taken = (proposed_params(t) for t in trials if t.number != trial.number)
    return [p for p in taken if p]


def is_taken(params: dict[str, Any], taken: Sequence[dict[str, Any]]) -> bool:
    """Whether some trial already used ``params`` on all of its own (active) parameters."""
    for other in taken:
        if other.keys() <= params.keys() and all(params[k] == v for k, v in other.items()):
            return True
    return False


class GenomeCodec:
    """Maps params <-> (numeric genes in [0, 1], categorical choice indices)."""

    def __init__(self, space: dict[str, BaseDistribution]) -> None:
        self.space = space
        self.numeric = [n for n, d in space.items() if not isinstance(d, CategoricalDistribution)]
        self.categorical = [n for n, d in space.items() if isinstance(d, CategoricalDistribution)]
        self.n_choices = [len(space[n].choices) for n in self.categorical]  # type: ignore[attr-defined]
        self._bounds = [_unit_bounds(space[n]) for n in self.numeric]

    @property
    def n_genes(self) -> int:
        return len(self.numeric) + len(self.categorical)

    @property
    def levels(self) -> list[int]:
        """Per numeric gene: how many values a linear int or stepped float takes (each an equal
        share of [0, 1]); 0 for continuous and log-scaled genes."""
        out = []
        for name in self.numeric:
            dist = self.space[name]
            step = dist.step   # type: ignore[attr-defined]  (None: a continuous float)
            grid = step is not None and not dist.log   # type: ignore[attr-defined]
            out.append(int(round((dist.high - dist.low) / step)) + 1 if grid else 0)  # type: ignore[attr-defined]
        return out

    def encode(
        self, params: dict[str, Any], rng: np.random.RandomState
    ) -> tuple[list[float], list[int]]:
        """Genome of ``params``; missing or out-of-space genes are drawn uniformly."""
        numeric = []
        for name, (lo, hi, is_log) in zip(self.numeric, self._bounds):
            value = params.get(name)
            if value is None:
                numeric.append(float(rng.uniform()))
                continue
            x = math.log(value) if is_log else float(value)
            numeric.append(min(1.0, max(0.0, (x - lo) / (hi - lo))))
        categorical = []
        for name, n in zip(self.categorical, self.n_choices):
            choices = self.space[name].choices  # type: ignore[attr-defined]
            value = params.get(name, _MISSING)
            index = _index_of(choices, value)
            categorical.append(int(rng.randint(n)) if index is None else index)
        return numeric, categorical

    def decode(self, numeric: Sequence[float], categorical: Sequence[int]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, u, (lo, hi, is_log) in zip(self.numeric, numeric, self._bounds):
            params[name] = _from_unit(self.space[name], min(1.0, max(0.0, u)), lo, hi, is_log)
        for name, index in zip(self.categorical, categorical):
            params[name] = self.space[name].choices[int(index)]  # type: ignore[attr-defined]
        return params

    def genome_matrix(self, genomes: Sequence[tuple[Sequence[float], Sequence[int]]]) -> np.ndarray:
        """Like ``unit_matrix`` of the decoded genomes (ints and steps rounded), vectorized."""
        numeric = np.array([g[0] for g in genomes], dtype=float).reshape(len(genomes), len(self.numeric))
        categorical = np.array([g[1] for g in genomes], dtype=float).reshape(len(genomes), len(self.categorical))
        numeric = np.clip(numeric, 0.0, 1.0)
        for j, (name, (lo, hi, is_log)) in enumerate(zip(self.numeric, self._bounds)):
            dist = self.space[name]
            if dist.step is None and not isinstance(dist, IntDistribution):  # type: ignore[attr-defined]
                continue
            x = lo + numeric[:, j] * (hi - lo)
            if is_log:
                x = np.exp(x)
            step = dist.step or 1  # type: ignore[attr-defined]
            x = np.clip(dist.low + np.round((x - dist.low) / step) * step, dist.low, dist.high)  # type: ignore[attr-defined]
            numeric[:, j] = ((np.log(x) if is_log else x) - lo) / (hi - lo)
        return np.hstack([numeric, categorical])

    def unit_matrix(self, params_list: Sequence[dict[str, Any]], fill: float = 0.5) -> np.ndarray:
        """(n, n_genes) array: numeric genes in [0, 1], categorical as indices; missing -> fill."""
        out = np.empty((len(params_list), self.n_genes))
        for i, params in enumerate(params_list):
            for j, (name, (lo, hi, is_log)) in enumerate(zip(self.numeric, self._bounds)):
                value = params.get(name)
                if value is None:
                    out[i, j] = fill
                else:
                    x = math.log(value) if is_log else float(value)
                    out[i, j] = min(1.0, max(0.0, (x - lo) / (hi - lo)))
            for k, name in enumerate(self.categorical):
                index = _index_of(self.space[name].choices, params.get(name, _MISSING))  # type: ignore[attr-defined]
                out[i, len(self.numeric) + k] = -1.0 if index is None else index
        return out


_MISSING = object()


def _index_of(choices: Sequence[Any], value: Any) -> int | None:
    if value is _MISSING:
        return None
    for i, choice in enumerate(choices):
        if choice == value and type(choice) is type(value):
            return i
    for i, choice in enumerate(choices):
        if choice == value:
            return i
    return None


def _unit_bounds(dist: BaseDistribution) -> tuple[float, float, bool]:
    """(low, high, log) of the interval [0, 1] maps onto, in the gene's own scale."""
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    low, high, step = float(dist.low), float(dist.high), dist.step
    if dist.log:
        if isinstance(dist, IntDistribution):   # widen by half an integer, in log space
            return math.log(low - 0.5 + 1e-9 if low > 0.5 else low), math.log(high + 0.5), True
        return math.log(low), math.log(high), True
    if step is not None:
        return low - 0.5 * step, high + 0.5 * step, False
    return low, high, False


def _from_unit(dist: BaseDistribution, u: float, lo: float, hi: float, is_log: bool) -> Any:
    x = lo + u * (hi - lo)
    if is_log:
        x = math.exp(x)
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    low, high, step = dist.low, dist.high, dist.step
    if step is not None:
        x = low + round((x - low) / step) * step
    x = min(high, max(low, x))
    if isinstance(dist, IntDistribution):
        return int(round(x))
    if step is not None:   # keep stepped floats on their grid despite float error
        decimals = max(0, -int(math.floor(math.log10(step))) + 6) if step > 0 else 12
        x = round(x, decimals)
    return float(x)
