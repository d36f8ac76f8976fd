"""Genomes for evolutionary operators: Optuna distributions <-> vectors.

Owns: the union search space of a study's trials (conditional parameters included) and the codec
that turns a parameter dict into a genome and back. Numeric genes live in [0, 1], encoded by
``autotune.space.to_unit`` / ``from_unit`` (the one encoding, shared with the warm start);
categorical genes are choice indices. Genes a trial lacks (inactive
conditional parameters) are drawn at random, so operators always see full genomes.
Must not know about: selection, surrogates, the model, the scheduler.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

from autotune._optuna import storage_of, trial_id_of
from autotune.space import choice_index, from_unit, snap_to_grid, to_unit


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
    storage_of(study).set_trial_system_attr(trial_id_of(trial), _PROPOSAL_KEY, text)


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
    trials = study.get_trials(deepcopy=False)
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
        for name in self.numeric:
            value = params.get(name)
            numeric.append(float(rng.uniform()) if value is None else to_unit(self.space[name], value))
        categorical = []
        for name, n in zip(self.categorical, self.n_choices):
            index = self._index(name, params)
            categorical.append(int(rng.randint(n)) if index is None else index)
        return numeric, categorical

    def decode(self, numeric: Sequence[float], categorical: Sequence[int]) -> dict[str, Any]:
        params: dict[str, Any] = {name: from_unit(self.space[name], u) for name, u in zip(self.numeric, numeric)}
        for name, index in zip(self.categorical, categorical):
            params[name] = self.space[name].choices[int(index)]  # type: ignore[attr-defined]
        return params

    def genome_matrix(self, genomes: Sequence[tuple[Sequence[float], Sequence[int]]]) -> np.ndarray:
        """Like ``unit_matrix`` of the decoded genomes (ints and steps rounded), vectorized."""
        numeric = np.array([g[0] for g in genomes], dtype=float).reshape(len(genomes), len(self.numeric))
        categorical = np.array([g[1] for g in genomes], dtype=float).reshape(len(genomes), len(self.categorical))
        for j, name in enumerate(self.numeric):
            numeric[:, j] = snap_to_grid(self.space[name], numeric[:, j])
        return np.hstack([numeric, categorical])

    def unit_matrix(self, params_list: Sequence[dict[str, Any]], fill: float = 0.5) -> np.ndarray:
        """(n, n_genes) array: numeric genes in [0, 1], categorical as indices; missing -> fill."""
        out = np.empty((len(params_list), self.n_genes))
        for i, params in enumerate(params_list):
            for j, name in enumerate(self.numeric):
                value = params.get(name)
                out[i, j] = fill if value is None else to_unit(self.space[name], value)
            for k, name in enumerate(self.categorical):
                index = self._index(name, params)
                out[i, len(self.numeric) + k] = -1.0 if index is None else index
        return out

    def _index(self, name: str, params: dict[str, Any]) -> int | None:
        """The choice index of categorical ``name`` in ``params``; None where it is missing (None
        may be a choice) or no choice."""
        if name not in params:
            return None
        return choice_index(self.space[name].choices, params[name])  # type: ignore[attr-defined]
