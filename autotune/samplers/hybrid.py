"""The ``hybrid`` optimizer: evolution proposes, a Gaussian process screens.

Owns: ``HybridSampler``. After ``n_startup_trials`` space-filling trials, each suggestion
1. fits Optuna's GP (Matern-5/2, ARD, Hamming distance for categorical genes) to the finished
   trials' genomes (``_encoding``) and their objective, power-transformed (Yeo-Johnson, robust to
   heavy tails); several objectives are scalarised by random Chebyshev weights (ParEGO); pruned
   trials join below every complete one (as TPE ranks them: later step, then better last value),
   so that a region whose trials are pruned loses its promise;
2. adds RUNNING trials to the GP at their predicted mean (kriging believer), so that parallel
   workers are steered away from each other;
3. breeds ``n_candidates`` offspring of the elite with DEAP operators (``_operators``), scores
   them by log expected improvement, and breeds a second and third round from the best-scored
   ones (evolution on the surrogate); as many uniform random candidates are scored too, so that
   EI can leave a local basin; the best candidate and the best random one are then polished by
   Optuna's local search on log EI (gradients for continuous genes, line search for discrete);
4. proposes the best candidate that no trial has used yet.
The startup trials follow a scrambled Sobol sequence over the numeric genes (categorical genes at
random): space-filling without the maximin design's pull towards the bounds, where a tuning range
usually has its bad end (on held-out seeds, 20 trials: better than maximin on 36 of 60 task x seed
runs, p = 0.017, and tied at 50; bench/RESULTS.md, "The hybrid's start-up design").
With probability ``exploration`` it proposes instead the most uncertain of a set of random points.
The GP's kernel parameters are refit with a warm start and at most ``max_model_trials`` trials
(the best half and a random rest) go into the model, so a suggestion stays well under a second
at 1,000 trials.
Must not know about: the model, the scheduler, the spec.
"""
from __future__ import annotations

import importlib
import random
import types
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.stats
from scipy.stats import qmc

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import study_trials_cached
from autotune.samplers._constraints import penalized_values
from autotune.samplers._encoding import (
    GenomeCodec,
    is_taken,
    proposed_params,
    remember_proposal,
    union_search_space,
)
from autotune.samplers._operators import Variation, deap_random, make_child
from autotune.samplers._pruned import pruned_scores
from autotune.samplers.evolution import default_population_size


class _OnFirstUse(types.ModuleType):
    """A module imported when first used: torch and Optuna's GP (which imports torch) load only
    when the first GP is fitted, not when the study's sampler is built. Building it is on the
    path of ``autotune run`` to its first trial (the start-up trials need no GP), and importing
    torch there took seconds (about 3 s on a 2-core CPU, more on a GPU machine's CUDA build)."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


torch = _OnFirstUse("torch")
# optuna._gp: Optuna 5.x's GP internals (pyproject pins optuna<6); tests/test_optuna_internals.py
# pins the names used here and that space.to_unit scales as its SearchSpace normalizes.
gp = _OnFirstUse("optuna._gp.gp")
gp_acqf = _OnFirstUse("optuna._gp.acqf")
optim_mixed = _OnFirstUse("optuna._gp.optim_mixed")
prior = _OnFirstUse("optuna._gp.prior")
gp_search_space = _OnFirstUse("optuna._gp.search_space")
gp_threads = _OnFirstUse("optuna._gp.thread_limiting")

_N_ROUNDS = 3          # rounds of breeding on the surrogate
_N_SURVIVORS = 8       # best candidates of a round that parent the next
_REFIT_ALWAYS_BELOW = 100   # trials; above, kernel parameters are refit when data grew by 5%
_N_KEEP = 64               # best candidates kept (decoded) as fallbacks for duplicates
_N_REFINE = 2              # candidates polished by local search: the best one, the best global one
_FIT_POINTS = 150           # trials the kernel parameters are fitted on (the GP uses more)
_COLD_FIT_POINTS = 60       # the same for a fit without a warm start


class HybridSampler(BaseSampler):
    """Evolutionary candidates screened by a Gaussian process (log EI), with some exploration.

    Example:
        >>> import optuna
        >>> from autotune.samplers import build_sampler
        >>> study = optuna.create_study(sampler=build_sampler("hybrid", seed=0))
        >>> study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=20)
        >>> study.best_value < 0.1
        True
    """

    def __init__(
        self,
        *,
        n_startup_trials: int = 10,
        exploration: float = 0.1,
        population_size: int | None = None,
        n_candidates: int = 256,
        mutation_prob: float | None = None,
        crossover_prob: float = 0.9,
        max_model_trials: int = 300,
        seed: int | None = None,
    ) -> None:
        self._n_startup_trials = n_startup_trials
        self._exploration = exploration
        self._population_size = population_size
        self._n_candidates = n_candidates
        self._variation = Variation(crossover_prob=crossover_prob, mutation_prob=mutation_prob)
        self._max_model_trials = max_model_trials
        self._py_rng = random.Random(seed)
        self._np_rng = np.random.RandomState(seed)
        self._random_sampler = RandomSampler(seed=seed)
        self._sobol_seed = seed
        self._gp_cache: gp.GPRegressor | None = None
        self._fitted_on = 0   # number of trials the cached kernel parameters were fitted on

    def reseed_rng(self) -> None:
        self._py_rng.seed()
        self._np_rng.seed()
        self._random_sampler.reseed_rng()
        self._sobol_seed = None   # each process its own scrambling: no shared start-up points

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        trials = study_trials_cached(study, (TrialState.COMPLETE,), use_cache=True)
        return union_search_space(trials)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.params]
        taken = [p for t in trials if t.number != trial.number and (p := proposed_params(t))]
        if self._in_startup(len(complete), len(taken), len(pruned)):
            params = _space_filling(GenomeCodec(search_space), taken, self._np_rng, self._sobol_seed)
            remember_proposal(study, trial, params)
            return params
        running = [
            p for t in trials
            if t.state == TrialState.RUNNING and t.number != trial.number
            and (p := proposed_params(t))
        ]
        # One thread: the many small GP calls are 100x slower when OpenMP and OpenBLAS contend.
        with torch.device("cpu"), gp_threads.limit_threads_in_optimization():
            params = self._propose(study, search_space, complete, pruned, running, taken)
        remember_proposal(study, trial, params)
        return params

    def _in_startup(self, n_complete: int, n_taken: int, n_pruned: int = 0) -> bool:
        """Whether the next proposal is a start-up point: until ``n_startup_trials`` trials are
        complete or pruned (as TPE counts them; the model learns from both), at least 2 of them
        complete. With K in flight, up to K - 1 more start-up points than that are proposed.
        (Counting complete trials alone, a study whose pruner cut most trials stayed in its
        space-filling start-up for 90 trials on the GPU quick study.)"""
        return n_complete + n_pruned < self._n_startup_trials or n_complete < 2

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    # -- one proposal ------------------------------------------------------------------------

    def _propose(
        self,
        study: Study,
        space: dict[str, BaseDistribution],
        complete: list[FrozenTrial],
        pruned: list[FrozenTrial],
        running: list[dict[str, Any]],
        taken: list[dict[str, Any]],
    ) -> dict[str, Any]:
        codec = GenomeCodec(space)
        score = _scalar_scores(complete, study.directions, self._np_rng)   # higher is better
        # Pruned trials join the model below every complete one: without them a region whose
        # trials are always pruned keeps its promise and is proposed again and again.
        seen = complete + pruned
        seen_score = np.concatenate([score, pruned_scores(pruned, score, study.directions)])
        model_idx = self._model_subset(seen_score)
        X = codec.unit_matrix([seen[i].params for i in model_idx])
        y = _normal_scores(seen_score[model_idx])
        is_categorical = np.array([False] * len(codec.numeric) + [True] * len(codec.categorical))
        gpr = self._fit(X, y, is_categorical, len(seen))
        gpr_data = gpr   # the GP on the finished trials only, before the kriging believer
        if running:
            # Kriging believer: running trials join the data at the posterior mean, so the
            # acquisition does not propose them again. Refit-free: the same kernel parameters.
            X_run = codec.unit_matrix(running)
            with torch.no_grad():
                y_run, _ = gpr.posterior(torch.from_numpy(X_run))
            gpr = _regressor(np.concatenate([X, X_run]), np.concatenate([y, y_run.numpy()]),
                             is_categorical, gpr)

        if self._np_rng.rand() < self._exploration:
            return self._explore(codec, gpr, taken)

        order = np.argsort(-score)
        elite_size = self._population_size or default_population_size(codec.n_genes)
        elite = [codec.encode(complete[i].params, self._np_rng) for i in order[:elite_size]]
        threshold = _incumbent(gpr_data, X, y)
        # Global candidates: uniform points, so that EI can pull the search out of a local basin.
        genomes = [_random_genome(codec, self._np_rng) for _ in range(self._n_candidates)]
        values = _log_ei(gpr, codec.genome_matrix(genomes), threshold)
        best_global = int(np.argmax(values))
        scored = list(zip(values.tolist(), genomes))
        parents = elite
        for round_ in range(_N_ROUNDS):
            # Evolution on the surrogate: breed from the elite, then from the best-scored offspring.
            genomes = self._breed(parents, codec, self._n_candidates if round_ == 0 else self._n_candidates // 2)
            values = _log_ei(gpr, codec.genome_matrix(genomes), threshold)
            scored.extend(zip(values.tolist(), genomes))
            top = np.argsort(-values)[:_N_SURVIVORS]
            parents = [genomes[i] for i in top] + elite[:2]
        global_start = scored[best_global]
        scored.sort(key=lambda pair: -pair[0])
        best = _untaken(((v, codec.decode(*g)) for v, g in scored), taken)
        starts = best[:_N_REFINE - 1] + [(global_start[0], codec.decode(*global_start[1]))]
        refined = _untaken(self._refine(gpr, codec, starts, threshold), taken)
        best = sorted(refined + best, key=lambda pair: -pair[0])
        return best[0][1] if best else codec.decode(*scored[0][1])

    def _refine(
        self,
        gpr: gp.GPRegressor,
        codec: GenomeCodec,
        best: list[tuple[float, dict[str, Any]]],
        threshold: float,
    ) -> list[tuple[float, dict[str, Any]]]:
        """Polish the best candidates by Optuna's local search on log EI (gradient + line search)."""
        ordered = {name: codec.space[name] for name in codec.numeric + codec.categorical}
        search_space = gp_search_space.SearchSpace(ordered)   # same gene order and scaling
        acqf = gp_acqf.LogEI(gpr=gpr, search_space=search_space, threshold=threshold)
        starts = codec.unit_matrix([params for _, params in best])
        xs, values = optim_mixed.local_search_mixed_batched(acqf, starts, tol=1e-4)
        return [(float(v), search_space.get_unnormalized_param(x)) for v, x in zip(values, xs)]

    def _fit(
        self, X: np.ndarray, y: np.ndarray, is_categorical: np.ndarray, n_complete: int
    ) -> gp.GPRegressor:
        """GP on (X, y); kernel parameters refit (warm-started) on at most _FIT_POINTS trials."""
        cache = self._gp_cache
        if cache is not None and len(cache.inverse_squared_lengthscales) != X.shape[1]:
            cache = None
        if cache is not None and n_complete > _REFIT_ALWAYS_BELOW and n_complete < self._fitted_on * 1.05:
            # Many trials: kernel parameters move little between suggestions; reuse them.
            return _regressor(X, y, is_categorical, cache)
        self._fitted_on = n_complete
        # A cold fit (first suggestion of a process) starts from scratch: keep it small.
        n_fit = _FIT_POINTS if cache is not None else _COLD_FIT_POINTS
        fit_idx = np.arange(len(X))
        if len(X) > n_fit:
            fit_idx = np.sort(self._np_rng.choice(len(X), n_fit, replace=False))
        fitted = gp.fit_kernel_params(
            X=X[fit_idx],
            Y=y[fit_idx],
            is_categorical=is_categorical,
            log_prior=prior.default_log_prior,
            minimum_noise=prior.DEFAULT_MINIMUM_NOISE_VAR,
            deterministic_objective=False,
            gpr_cache=cache,
        )
        self._gp_cache = fitted
        return fitted if len(fit_idx) == len(X) else _regressor(X, y, is_categorical, fitted)

    def _model_subset(self, score: np.ndarray) -> np.ndarray:
        """Indices of the trials the GP sees: all, or the best half and a random rest."""
        n, cap = len(score), self._max_model_trials
        if n <= cap:
            return np.arange(n)
        order = np.argsort(-score)
        rest = self._np_rng.choice(order[cap // 2:], size=cap - cap // 2, replace=False)
        return np.sort(np.concatenate([order[: cap // 2], rest]))

    def _breed(self, parents: Sequence[tuple[list[float], list[int]]], codec: GenomeCodec, n: int):
        pairs = self._np_rng.randint(len(parents), size=(n, 2))
        # Mixed mutation strengths: mostly local refinements, some long jumps.
        etas = np.where(self._np_rng.rand(n) < 0.7, 20.0, 2.0)
        with deap_random(self._py_rng):
            return [
                make_child(parents[i], parents[j], codec.n_choices, self._variation, None, eta)
                for (i, j), eta in zip(pairs, etas)
            ]

    def _explore(self, codec: GenomeCodec, gpr: gp.GPRegressor, taken: list[dict[str, Any]]) -> dict[str, Any]:
        candidates = [codec.decode(*_random_genome(codec, self._np_rng)) for _ in range(64)]
        with torch.no_grad():
            _, var = gpr.posterior(torch.from_numpy(codec.unit_matrix(candidates)))
        for i in np.argsort(-var.numpy()):
            if not is_taken(candidates[i], taken):
                return candidates[i]
        return candidates[0]


def _untaken(
    scored: Iterable[tuple[float, dict[str, Any]]], taken: list[dict[str, Any]]
) -> list[tuple[float, dict[str, Any]]]:
    """The first _N_KEEP scored proposals that no trial has used (looking at most 8x as far)."""
    out: list[tuple[float, dict[str, Any]]] = []
    seen: set[tuple] = set()
    for i, (value, params) in enumerate(scored):
        if len(out) >= _N_KEEP or i >= 8 * _N_KEEP:
            break
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in seen and not is_taken(params, taken):
            out.append((value, params))
        seen.add(key)
    return out


def _regressor(
    X: np.ndarray, y: np.ndarray, is_categorical: np.ndarray, params: gp.GPRegressor
) -> gp.GPRegressor:
    """A GP on (X, y) with the kernel parameters of ``params``, without fitting."""
    gpr = gp.GPRegressor(
        is_categorical=torch.from_numpy(is_categorical),
        X_train=torch.from_numpy(X),
        y_train=torch.from_numpy(y),
        inverse_squared_lengthscales=params.inverse_squared_lengthscales,
        kernel_scale=params.kernel_scale,
        noise_var=params.noise_var,
    )
    gpr._cache_matrix()
    return gpr


def _space_filling(
    codec: GenomeCodec, taken: list[dict[str, Any]], rng: np.random.RandomState, seed: int | None
) -> dict[str, Any]:
    """Start-up point number ``len(taken)`` of a scrambled Sobol sequence (seeded by ``seed``) over
    the numeric genes, with random categorical genes; the next points of the sequence if that one
    is taken (another process with the same seed)."""
    n_taken = len(taken)
    if codec.numeric:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # Sobol's balance wants a power of 2; a prefix is fine
            points = qmc.Sobol(len(codec.numeric), scramble=True, seed=seed).random(n_taken + 64)
    else:
        points = np.zeros((n_taken + 64, 0))
    params = {}
    for u in points[n_taken:]:
        params = codec.decode([float(x) for x in u], [int(rng.randint(n)) for n in codec.n_choices])
        if not is_taken(params, taken):
            break
    return params


def _incumbent(gpr: gp.GPRegressor, X: np.ndarray, y: np.ndarray) -> float:
    """The value expected improvement is measured from: the best (transformed) score observed.
    A seam: bench/hybrid_ablation.py and hybrid_trace.py swap in a posterior-mean incumbent
    (tried, not adopted: bench/RESULTS.md), which needs ``gpr`` and ``X``."""
    return float(y.max())


def _random_genome(codec: GenomeCodec, rng: np.random.RandomState) -> tuple[list[float], list[int]]:
    return rng.uniform(size=len(codec.numeric)).tolist(), [int(rng.randint(n)) for n in codec.n_choices]


def _log_ei(gpr: gp.GPRegressor, X: np.ndarray, threshold: float) -> np.ndarray:
    with torch.no_grad():
        mean, var = gpr.posterior(torch.from_numpy(X))
        return gp_acqf.logei(mean, var + 1e-12, threshold).numpy()


def _scalar_scores(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection], rng: np.random.RandomState
) -> np.ndarray:
    """One number per trial, higher is better; several objectives via random Chebyshev weights;
    infeasible trials below all feasible ones, by total constraint violation."""
    sign = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions])
    # Infeasible trials (stored constraint values > 0) rank below every feasible one.
    values = gp.warn_and_convert_inf(penalized_values(trials, directions)) * sign
    if values.shape[1] == 1:
        return values[:, 0]
    low, high = values.min(axis=0), values.max(axis=0)
    normalized = (high - values) / np.maximum(high - low, 1e-12)   # 0 best, 1 worst
    weights = rng.dirichlet(np.ones(values.shape[1]))
    loss = (normalized * weights).max(axis=1) + 0.05 * (normalized * weights).sum(axis=1)
    return -loss


def _normal_scores(score: np.ndarray) -> np.ndarray:
    """Scores made closer to normal by a Yeo-Johnson power transform, then standardized.

    The transform tames heavy tails (Rosenbrock-like objectives, diverged trainings) while
    keeping the spacing near the best values, which expected improvement needs. (A rank warp
    flattens that spacing and makes EI chase uncertainty instead.)
    """
    z = (score - score.mean()) / max(score.std(), 1e-12)
    with np.errstate(all="ignore"):
        warped, _ = scipy.stats.yeojohnson(-z)   # on the loss, whose tail is the long one
    if np.all(np.isfinite(warped)) and warped.std() > 1e-12:
        z = -warped
    return (z - z.mean()) / max(z.std(), 1e-12)


__all__ = ["HybridSampler"]
