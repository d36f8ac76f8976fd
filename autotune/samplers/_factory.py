"""One sampler factory for every optimizer kind, and the validation of its options.

Owns: the table of kinds -> options (with defaults and checks) and ``build_sampler``, which sets up
Optuna's own samplers well (multivariate grouped TPE with constant liar, GP, CMA-ES with a TPE
fallback for categorical or conditional parameters, NSGA-II, random) and ours (evolution, hybrid).
Must not know about: YAML files (the spec loader maps errors onto keys), the model, the scheduler.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import study_trials_cached
from autotune.samplers._distinct import DistinctSampler

SAMPLER_KINDS = ("tpe", "gp", "cmaes", "random", "evolution", "nsga2", "hybrid")
_logger = logging.getLogger("autotune.samplers")


def _int_at_least(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"must be an integer >= {low}, got {value!r}"
        return None
    return check


def _optional_int_at_least(low: int) -> Callable[[Any], str | None]:
    check = _int_at_least(low)
    return lambda value: None if value is None else check(value)


def _probability(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        return f"must be a number in [0, 1], got {value!r}"
    return None


def _optional_probability(value: Any) -> str | None:
    return None if value is None else _probability(value)


def _positive(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return f"must be a positive number, got {value!r}"
    return None


def _optional_positive(value: Any) -> str | None:
    return None if value is None else _positive(value)


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


# kind -> option -> (default, check). Defaults live here and nowhere else.
_OPTIONS: dict[str, dict[str, tuple[Any, Callable[[Any], str | None]]]] = {
    "tpe": {
        "n_startup_trials": (10, _int_at_least(0)),
        "n_ei_candidates": (24, _int_at_least(1)),
        "multivariate": (True, _boolean),
        "group": (True, _boolean),
        "constant_liar": (True, _boolean),
    },
    "gp": {
        "n_startup_trials": (10, _int_at_least(0)),
        "deterministic_objective": (False, _boolean),
    },
    "cmaes": {
        "n_startup_trials": (1, _int_at_least(0)),
        "sigma0": (None, _optional_positive),
        "popsize": (None, _optional_int_at_least(2)),
        "use_separable_cma": (False, _boolean),
        "with_margin": (False, _boolean),
        "lr_adapt": (False, _boolean),
        "consider_pruned_trials": (False, _boolean),
    },
    "random": {},
    "nsga2": {
        "population_size": (24, _int_at_least(2)),
        "mutation_prob": (None, _optional_probability),
        "crossover_prob": (0.9, _probability),
        "swapping_prob": (0.5, _probability),
    },
    "evolution": {
        "population_size": (None, _optional_int_at_least(2)),
        "mutation_prob": (None, _optional_probability),
        "crossover_prob": (0.9, _probability),
        "eta_crossover": (15.0, _positive),
        "eta_mutation": (20.0, _positive),
        "tournament_size": (6, _int_at_least(1)),
    },
    "hybrid": {
        "n_startup_trials": (10, _int_at_least(2)),
        "exploration": (0.1, _probability),
        "population_size": (None, _optional_int_at_least(2)),
        "n_candidates": (256, _int_at_least(8)),
        "mutation_prob": (None, _optional_probability),
        "crossover_prob": (0.9, _probability),
        "max_model_trials": (300, _int_at_least(20)),
    },
}
_SINGLE_OBJECTIVE_KINDS = ("cmaes",)


def sampler_defaults(kind: str) -> dict[str, Any]:
    """The options ``kind`` accepts, with their defaults."""
    _check_kind(kind)
    return {name: default for name, (default, _) in _OPTIONS[kind].items()}


def check_sampler_options(kind: str, options: dict[str, Any], n_objectives: int = 1) -> None:
    """Raise ``ValueError("<option or 'kind'>: <problem>")`` if ``options`` cannot build ``kind``."""
    _check_kind(kind)
    valid = _OPTIONS[kind]
    for name, value in options.items():
        if name not in valid:
            names = ", ".join(sorted(valid)) or "none"
            raise ValueError(f"{name}: unknown option for optimizer {kind!r}; valid options: {names}")
        problem = valid[name][1](value)
        if problem:
            raise ValueError(f"{name}: {problem}")
    if kind in _SINGLE_OBJECTIVE_KINDS and n_objectives > 1:
        raise ValueError(
            f"kind: {kind!r} optimizes a single objective but the study has {n_objectives}; "
            "use hybrid, nsga2, evolution, tpe, gp or random"
        )


def _check_kind(kind: str) -> None:
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"kind: unknown optimizer {kind!r}; choose one of {', '.join(SAMPLER_KINDS)}")


def build_sampler(kind: str, seed: int | None = None, **options: Any) -> BaseSampler:
    """A ready Optuna sampler for ``kind`` (one of ``SAMPLER_KINDS``), behind the duplicate guard
    (``DistinctSampler``: no two trials get the same configuration).

    Constraint values that trials set (``Trial.set_constraint``; <= 0: satisfied) are used by
    Optuna's TPE, GP and NSGA-II, and by our hybrid and evolution samplers (infeasible trials
    rank below feasible ones, by total violation); CMA-ES and random ignore them. Pruned trials
    inform every model-based kind: TPE and the hybrid rank them below complete trials, and
    Optuna's GP, which models complete trials only, sees them so through ``PrunedAsComplete``.

    Example:
        >>> import optuna
        >>> sampler = build_sampler("hybrid", seed=0, exploration=0.2)
        >>> study = optuna.create_study(sampler=sampler)
    """
    check_sampler_options(kind, options)
    opts = {**sampler_defaults(kind), **options}
    with warnings.catch_warnings():
        # Optuna marks `group`, `deterministic_objective` and friends experimental; we chose them.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        inner = _BUILDERS[kind](seed, opts)
    return DistinctSampler(inner, seed=seed)


def _build_tpe(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, **opts)


def _build_gp(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    from autotune.samplers._pruned import PrunedAsComplete

    # Optuna's GP models complete trials only; behind PrunedAsComplete it sees pruned ones too.
    return PrunedAsComplete(optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **opts))


def _build_cmaes(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    # Optuna's CMA-ES warns after every trial that sets constraint values; once is enough.
    warnings.filterwarnings("once", message="Constraints have been set, but CmaEsSampler")
    fallback = _WarnOnceFallback(optuna.samplers.TPESampler(seed=seed), "cmaes")
    return optuna.samplers.CmaEsSampler(
        seed=seed, independent_sampler=fallback, warn_independent_sampling=False, **opts
    )


def _build_random(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _build_nsga2(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, **opts)


def _build_evolution(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    from autotune.samplers.evolution import EvolutionSampler

    return EvolutionSampler(seed=seed, **opts)


def _build_hybrid(seed: int | None, opts: dict[str, Any]) -> BaseSampler:
    from autotune.samplers.hybrid import HybridSampler

    return HybridSampler(seed=seed, **opts)


_BUILDERS: dict[str, Callable[[int | None, dict[str, Any]], BaseSampler]] = {
    "tpe": _build_tpe,
    "gp": _build_gp,
    "cmaes": _build_cmaes,
    "random": _build_random,
    "nsga2": _build_nsga2,
    "evolution": _build_evolution,
    "hybrid": _build_hybrid,
}


class _WarnOnceFallback(BaseSampler):
    """Independent sampler for what a relative sampler cannot handle; says so once, not per trial."""

    def __init__(self, inner: BaseSampler, owner: str) -> None:
        self._inner = inner
        self._owner = owner
        self._warned = False

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if not self._warned and _has_finished_trial(study):
            self._warned = True
            _logger.warning(
                "%s: parameter %r (categorical or conditional) is sampled by independent TPE "
                "instead; other such parameters will be too (this is said once).",
                self._owner, param_name,
            )
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)


def _has_finished_trial(study: Study) -> bool:
    return bool(study_trials_cached(study, (TrialState.COMPLETE,), use_cache=True))
