"""The ``prior`` warm-start strategy: earlier studies' trials inform a sampler without joining the study.

Owns: ``PriorSampler``, a ``BaseSampler`` that wraps any other sampler and shows it a *view* of the
study in which the transferred trials (FrozenTrials already carried into the new space) come before
the study's own. Nothing is written to the study: the transferred trials never count against the
budget, never appear in reports or ``best_trial``. How many are shown is ``fade * relevance`` of
them (a fixed random order decides which go first):
- ``fade`` falls linearly from 1 to 0 over ``fade_trials`` own finished trials;
- ``relevance`` falls to 0 when the sources rank the own results no better than chance (each own
  trial predicted by its nearest source trial), so that an unrelated source stops steering after a
  few trials and the inner sampler is back on its own (TPE: random start-up trials again).
Once there are own results, the shown trials' objective values are mapped by rank onto the own
values, so that a shifted or rescaled earlier problem cannot crowd the own trials out of the
sampler's "good" set.

Pruned source trials are shown as PRUNED trials with their learning curve: samplers that use pruned
trials (TPE ranks them below every COMPLETE trial, furthest step first, then by the last
intermediate value) learn that such configurations were stopped; the others ignore them as they
ignore the study's own pruned trials. Once the study has pruned trials of its own, a shown pruned
source trial's curve is replaced by the (last step, value) of the own pruned trial at the same rank,
the same mapping as for complete trials; the relevance and the value mapping read complete trials
only. A genetic-algorithm sampler breeds from the study's own trials only, so the prior cannot
inform it: NSGA-II (a ``BaseGASampler``) is shown the study's own trials only (its generations are
the study's own trials, see ``_StudyView``); ``EvolutionSampler`` is shown the source trials but
its elite skips trials numbered below 0. The ``enqueue`` strategy is the one that hands them
earlier configurations.
Must not know about: the model, storages, how the trials were carried.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseGASampler, BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autotune._optuna import StudyView, contains
from autotune.space import to_unit

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_MIN_OWN_FOR_RESCALE = 3   # own values needed before source values are mapped onto them
_MIN_OWN_FOR_RELEVANCE = 3  # own values needed before the sources' relevance is judged
_PSEUDO_AGREEING = 4        # pairs of agreement counted in advance (see `relevance`)


class PriorSampler(BaseSampler):
    """Wraps ``inner`` so that it sees ``source_trials`` as the oldest trials of every study.

    ``source_trials`` are COMPLETE or PRUNED FrozenTrials in the new space (numbered -1, user
    attr ``warm_start_from``). Example::

        sampler = PriorSampler(optuna.samplers.TPESampler(seed=0), carried_trials)
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=20)   # len(study.trials) == 20
    """

    def __init__(self, inner: BaseSampler, source_trials: Sequence[FrozenTrial],
                 fade_trials: int | None = None, seed: int = 0) -> None:
        self.inner = inner
        self.source_trials = list(source_trials)
        self.complete_sources = [t for t in self.source_trials if t.state == TrialState.COMPLETE]
        self.pruned_sources = [t for t in self.source_trials if t.state == TrialState.PRUNED]
        self.fade_trials = fade_trials if fade_trials is not None else max(len(source_trials), 20)
        # The order in which source trials leave the view; fixed, so every call agrees.
        self._drop_order = np.random.RandomState(seed).permutation(len(self.source_trials))
        self._relevance_key: tuple | None = None
        self._relevance = 1.0

    def _view(self, study: optuna.Study) -> "_StudyView":
        return _StudyView(study, self)

    def visible_sources(self, own: Sequence[FrozenTrial],
                        direction: StudyDirection = StudyDirection.MINIMIZE) -> list[FrozenTrial]:
        """The source trials shown beside ``own`` (the study's trials), values rescaled.

        The share shown is ``fade * relevance``: ``fade`` falls linearly from 1 to 0 over
        ``fade_trials`` own finished trials; ``relevance`` (see ``relevance``) falls to 0 when the
        sources rank the own results wrongly, so that an unrelated source stops steering at once.
        ``direction`` (single objective) orders pruned trials' last intermediate values."""
        finished = [t for t in own if t.state in _FINISHED]
        complete = [t for t in own if t.state == TrialState.COMPLETE and t.values]
        fade = max(0.0, 1.0 - len(finished) / self.fade_trials) if self.fade_trials else 0.0
        share = fade * self._cached_relevance(complete) if fade > 0 else 0.0
        n_keep = int(round(share * len(self.source_trials)))
        keep = sorted(self._drop_order[:n_keep])
        shown = [self.source_trials[i] for i in keep]
        if not shown:
            return shown
        if len(complete) >= _MIN_OWN_FOR_RESCALE:
            own_values = np.asarray([t.values for t in complete], dtype=float)
            shown = [_rescale(t, self.complete_sources, own_values)
                     if t.state == TrialState.COMPLETE else t for t in shown]
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        own_pruned = sorted((t for t in own if t.state == TrialState.PRUNED and t.intermediate_values),
                            key=lambda t: _pruned_key(t, sign))
        if len(own_pruned) >= _MIN_OWN_FOR_RESCALE:
            source_keys = sorted(_pruned_key(t, sign) for t in self.pruned_sources)
            shown = [_rerank_pruned(t, source_keys, own_pruned, sign)
                     if t.state == TrialState.PRUNED else t for t in shown]
        return shown

    def _cached_relevance(self, complete: list[FrozenTrial]) -> float:
        # Samplers list the trials several times per suggestion; own results change once a trial.
        key = (len(complete), complete[-1].number if complete else None)
        if self._relevance_key != key:
            self._relevance_key, self._relevance = key, relevance(self.complete_sources, complete)
        return self._relevance

    # BaseSampler: every call goes to the inner sampler with the view in place of the study.
    def infer_relative_search_space(self, study, trial):  # noqa: ANN001, ANN201
        return self.inner.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):  # noqa: ANN001, ANN201
        return self.inner.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: ANN001, ANN201
        return self.inner.sample_independent(self._view(study), trial, param_name,
                                             param_distribution)

    def before_trial(self, study, trial):  # noqa: ANN001, ANN201
        self.inner.before_trial(self._view(study), trial)

    def after_trial(self, study, trial, state, values):  # noqa: ANN001, ANN201
        self.inner.after_trial(self._view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def relevance(sources: Sequence[FrozenTrial], own: Sequence[FrozenTrial]) -> float:
    """How well the sources predict the study's own COMPLETE results, from 0.0 to 1.0.

    Each own trial is predicted by the value of its nearest source trial (parameters normalized
    to [0, 1], log scale where the distribution is; a categorical counts 0 or 1). ``p`` is the
    share of own-trial pairs that the predictions order as their own values do, counting
    ``_PSEUDO_AGREEING`` pairs of agreement in advance so that a few results move it only a little;
    the relevance is ``2p - 1``, clipped at 0 (no better than chance: no relevance)."""
    if len(own) < _MIN_OWN_FOR_RELEVANCE or not sources:
        return 1.0
    names = sorted({n for t in sources for n in t.distributions})
    dists = {n: next(t.distributions[n] for t in sources if n in t.distributions) for n in names}
    src_x, own_x = _encode(sources, names, dists), _encode(own, names, dists)
    is_cat = np.array([isinstance(dists[n], CategoricalDistribution) for n in names])
    diff = src_x[None, :, :] - own_x[:, None, :]                 # (n_own, n_src, n_params)
    sq = np.where(is_cat, (diff != 0).astype(float), diff ** 2)
    sq = np.where(np.isnan(diff), np.nan, sq)
    with np.errstate(all="ignore"):
        dist = np.nanmean(sq, axis=2)                           # (n_own, n_src)
    dist = np.where(np.isnan(dist), np.inf, dist)
    predicted = np.asarray([t.values for t in sources], dtype=float)[np.argmin(dist, axis=1)]
    actual = np.asarray([t.values for t in own], dtype=float)
    upper = np.triu_indices(len(own), k=1)
    agree = disagree = 0
    for j in range(actual.shape[1]):
        prod = (np.sign(predicted[:, None, j] - predicted[None, :, j])
                * np.sign(actual[:, None, j] - actual[None, :, j]))[upper]
        agree += int(np.sum(prod > 0))
        disagree += int(np.sum(prod < 0))
    p = (agree + _PSEUDO_AGREEING) / (agree + disagree + _PSEUDO_AGREEING)
    return float(min(1.0, max(0.0, 2.0 * p - 1.0)))


def _encode(trials: Sequence[FrozenTrial], names: list[str],
            dists: dict[str, BaseDistribution]) -> np.ndarray:
    """(n_trials, n_params): each parameter as its point of [0, 1] (``space.to_unit``; only
    equality counts for categoricals), NaN where a trial lacks the parameter."""
    x = np.full((len(trials), len(names)), np.nan)
    for i, t in enumerate(trials):
        for k, n in enumerate(names):
            if n in t.params and _fits(dists[n], t.params[n]):
                x[i, k] = to_unit(dists[n], t.params[n])
    return x


def _rescale(t: FrozenTrial, complete_sources: list[FrozenTrial],
             own_values: np.ndarray) -> FrozenTrial:
    """A copy of the complete trial ``t`` whose values are the own values at the same rank quantile
    among ``complete_sources`` (per objective): the source's q-best counts as the study's q-best."""
    src_values = np.asarray([s.values for s in complete_sources], dtype=float)   # (n_src, n_obj)
    values = []
    for j, v in enumerate(t.values):
        q = float(np.mean(src_values[:, j] < v) + 0.5 * np.mean(src_values[:, j] == v))
        values.append(float(np.quantile(own_values[:, j], q)))
    c = copy.copy(t)
    c._values = values
    return c


def _pruned_key(t: FrozenTrial, sign: float) -> tuple[float, float]:
    """How TPE orders PRUNED trials, best first: furthest last step, then best last value."""
    if not t.intermediate_values:
        return (1.0, 0.0)
    step, value = max(t.intermediate_values.items())
    return (-float(step), math.inf if math.isnan(value) else sign * value)


def _rerank_pruned(t: FrozenTrial, source_keys: list[tuple[float, float]],
                   own_pruned: list[FrozenTrial], sign: float) -> FrozenTrial:
    """A copy of the pruned trial ``t`` whose curve is the (last step, value) of the own pruned
    trial (``own_pruned``, best first) at the same rank quantile among the source's pruned trials."""
    if not t.intermediate_values:
        return t
    key = _pruned_key(t, sign)
    below = sum(k < key for k in source_keys)
    q = (below + 0.5 * sum(k == key for k in source_keys)) / len(source_keys)
    peer = own_pruned[min(int(q * len(own_pruned)), len(own_pruned) - 1)]
    c = copy.copy(t)
    c.intermediate_values = dict([max(peer.intermediate_values.items())])
    return c


class _StudyView(StudyView):
    """The study as the inner sampler sees it: the real study (storage, directions, attrs, system
    attrs, which samplers may write) except that listing trials prepends the visible source trials,
    each tagged with the distributions the own trials use for that parameter.

    Not for a generational genetic-algorithm sampler (``BaseGASampler``: NSGA-II): it sees the
    study's own trials only. It keeps generations of the study's own trials, finding a
    trial at the list position of its number and its parents by trial id in the study's system
    attributes; source trials (number and id -1, their count changing as they fade) stood in the
    own trials' places there, became parents, and once faded out left an empty parent population.
    Trials without a generation of the study could not be bred from anyway."""

    def __init__(self, study: optuna.Study, prior: PriorSampler) -> None:
        super().__init__(study)
        self._prior = prior
        self._shows_sources = not isinstance(_innermost(prior.inner), BaseGASampler)

    def _shown(self, own: list[FrozenTrial]) -> list[FrozenTrial]:
        if not self._shows_sources:
            return own
        directions = self._study.directions
        direction = directions[0] if len(directions) == 1 else StudyDirection.MINIMIZE
        return _align_distributions(self._prior.visible_sources(own, direction), own) + own


def _innermost(sampler: BaseSampler) -> BaseSampler:
    """The sampler under its wrappers (the duplicate guard, the pruned-trial view), which hold it as
    ``inner``: a study's sampler always comes behind the duplicate guard."""
    while isinstance(getattr(sampler, "inner", None), BaseSampler):
        sampler = sampler.inner
    return sampler


def _align_distributions(sources: list[FrozenTrial], own: list[FrozenTrial]) -> list[FrozenTrial]:
    # Samplers take the intersection of trials' distributions: a source trial whose distribution
    # object differs from the own trials' (say, a float `high` written differently) would hide
    # the parameter from the sampler. The carried value is valid in both.
    latest: dict[str, BaseDistribution] = {}
    for t in own:
        if t.state.is_finished():
            latest.update(t.distributions)
    if not latest or not sources:
        return sources
    out = []
    for t in sources:
        if all(latest.get(n, d) == d for n, d in t.distributions.items()):
            out.append(t)
            continue
        c = copy.copy(t)
        dists = dict(t.distributions)
        for n, d in t.distributions.items():
            if n in latest and latest[n] != d and _fits(latest[n], t.params[n]):
                dists[n] = latest[n]
        c.distributions = dists
        out.append(c)
    return out


def _fits(dist: BaseDistribution, value: Any) -> bool:
    return contains(dist, value)
