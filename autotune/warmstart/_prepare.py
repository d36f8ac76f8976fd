"""Warm start: moving knowledge from earlier studies in the study store into a new study.

Owns: finding the source studies (named, or ``auto``: the earlier studies whose search space
overlaps most), reading their finished trials (read only: a source study is never modified),
carrying each trial's parameters into the new space (``_transfer``), the three strategies,
the provenance record in the new study's user attrs, and rebuilding the same sampler in a process
that joins the study (``prepare_join``, for ``autotune worker``)::

    warm_start = {"strategy": "enqueue" | "prior" | "local", "sources": {study_name: n_trials},
                  "out_of_range": "clip" | "drop", "local_trials": 15,   # local only
                  "storage": "<masked URL>"}          # "storage" only when not the study's own

- ``enqueue``: the best ``best_k`` COMPLETE configurations of each source are enqueued once (user
  attr ``warm_start_from: <source>``) and re-evaluated first; parameters new to this study are
  filled by the sampler. Pruned source trials are never enqueued. Resuming the study enqueues
  nothing again; ``n_trials`` counts the enqueued configurations.
- ``prior``: the sampler is wrapped (``_prior.PriorSampler``) so that it sees the carried
  trials, COMPLETE and PRUNED (with their learning curves, so that TPE ranks them below every
  complete trial as it does the study's own pruned ones), as the oldest of the study, fading out
  as the study's own trials accumulate; nothing is added to the study. ``n_trials`` counts the
  carried trials, pruned ones included.
- ``local``: ``prior``, plus a local search (``_local.LocalSearchSampler``) for the
  first ``local_trials`` trials, longer while it still improves: the sources' best configuration
  first, then steps around the best configuration found so far (numeric parameters, or one
  discrete parameter at a time). For a source whose optimum has moved a little (another scale,
  another sequence length): it measured fastest on the related pairs of ``bench/warm_start.py``.

Must not know about: the model, the scheduler, YAML.

Example::

    sampler, apply = warmstart.prepare(spec, storage, optuna.samplers.TPESampler(seed=0))
    study = store.create_or_load_study(storage, spec.study, spec.directions, sampler=sampler)
    apply(study)       # {"moe-small-v0": 5}
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autotune import space as space_module
from autotune import store
from autotune._optuna import set_trial_id, study_id_of
from autotune.warmstart._local import LocalSearchSampler
from autotune.warmstart._prior import PriorSampler
from autotune.warmstart._transfer import carry_params, space_overlap
from autotune.spec_types import WARM_START_STRATEGIES, StudySpec, WarmStartSpec


AUTO = "auto"
AUTO_MIN_OVERLAP = 0.5      # `auto` takes a study only when this share of parameters is shared
AUTO_MAX_SOURCES = 3
PROVENANCE_ATTR = "warm_start"
SOURCE_ATTR = "warm_start_from"

_log = logging.getLogger("autotune")

Apply = Callable[[optuna.Study], dict[str, int]]


class WarmStartError(Exception):
    """A warm start that cannot be done as asked: a missing source study, a source with nothing in
    common with the new space, directions that differ."""


@dataclass(frozen=True)
class _Source:
    name: str
    trials: tuple[FrozenTrial, ...]     # COMPLETE and PRUNED trials, as stored (the source's space)
    carried: tuple[dict[str, Any], ...]  # per trial: its parameters in the new space


def prepare(spec: StudySpec, storage: BaseStorage | str,
            sampler: optuna.samplers.BaseSampler) -> tuple[optuna.samplers.BaseSampler, Apply]:
    """The sampler to create the study with, and ``apply(study) -> {source: n_trials}`` to call
    once the study exists. Raises WarmStartError before anything is written."""
    ws = spec.warm_start
    if ws is None or not ws.sources:
        return sampler, lambda study: {}
    _check_strategy(spec, ws)
    sources, other_url = _load_sources(spec, ws, storage)
    record = _record_settings(ws, other_url)
    if ws.strategy == "enqueue":
        return sampler, lambda study: _apply_enqueue(study, sources, ws.best_k, spec.directions,
                                                     record)
    counts = _counts(sources, lambda s: sum(1 for c in s.carried if c))
    return _wrap(spec, ws, sampler, sources), _record_apply(counts, record)


def check(spec: StudySpec, storage: BaseStorage) -> None:
    """Raise the WarmStartError that ``prepare`` would raise (a missing source, other directions,
    nothing in common with this space), reading the sources' storage read-only: for
    ``autotune validate``."""
    ws = spec.warm_start
    if ws is None or not ws.sources:
        return
    _check_strategy(spec, ws)
    _load_sources(spec, ws, storage, opener=store.open_reader)


def prepare_join(spec: StudySpec, storage: BaseStorage | str,
                 sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
    """The sampler for a process that joins the existing study ``spec.study`` (``autotune
    worker``): the one ``prepare`` gave the process that started it, built without writing
    anything and without enqueueing.

    The study's provenance record decides (the run that started it wrote what it used, ``auto``
    already resolved); without one, the spec's ``warm_start``. A record that cannot be followed
    (its sources' storage URL had a password, now masked; a source gone) is a warning, and the
    process samples without the prior; a spec that cannot is a WarmStartError, as for ``prepare``."""
    storage = store.open_storage(storage) if isinstance(storage, str) else storage
    study_id = storage.get_study_id_from_name(spec.study)
    record = storage.get_study_user_attrs(study_id).get(PROVENANCE_ATTR)
    from_record = isinstance(record, dict) and bool(record.get("sources"))
    ws = _from_record(spec, record) if from_record else spec.warm_start
    if ws is None or not ws.sources or ws.strategy == "enqueue":   # the run enqueued already
        return sampler
    try:
        _check_strategy(spec, ws)
        sources, _ = _load_sources(spec, ws, storage)
    except WarmStartError as exc:
        if not from_record:
            raise
        _log.warning("joining study %r: cannot rebuild its warm start (%s); sampling without "
                     "the %s strategy", spec.study, exc, ws.strategy)
        return sampler
    return _wrap(spec, ws, sampler, sources)


def _check_strategy(spec: StudySpec, ws: WarmStartSpec) -> None:
    if ws.strategy not in WARM_START_STRATEGIES:
        raise WarmStartError(f"warm_start.strategy {ws.strategy!r}: expected one of "
                             f"{', '.join(WARM_START_STRATEGIES)}")
    if ws.strategy == "local" and len(spec.directions) != 1:
        raise WarmStartError(f"warm_start.strategy local needs a single objective "
                             f"(this study has {len(spec.directions)}); use prior")


def _load_sources(spec: StudySpec, ws: WarmStartSpec, storage: BaseStorage | str,
                  opener: Callable[[str], BaseStorage] | None = None
                  ) -> tuple[list[_Source], str | None]:
    """The sources' trials carried into this space, and the sources' storage URL when it is not
    the study's own (opened with ``opener``)."""
    src_storage, other_url = _source_storage(ws, spec, storage, opener)
    dists = space_module.distributions(spec.space)
    sources = [_carry(spec, ws, name, trials, dists)
               for name, trials in _read_sources(spec, ws, src_storage, other_url, dists)]
    return sources, other_url


def _wrap(spec: StudySpec, ws: WarmStartSpec, sampler: optuna.samplers.BaseSampler,
          sources: list[_Source]) -> PriorSampler:
    trials = _prior_trials(sources, space_module.distributions(spec.space))
    if ws.strategy == "local":
        return LocalSearchSampler(sampler, trials, local_trials=ws.local_trials,
                                  direction=spec.directions[0], seed=spec.optimizer.seed or 0)
    return PriorSampler(sampler, trials)


# ---- provenance -----------------------------------------------------------------------------

def _record_settings(ws: WarmStartSpec, other_url: str | None) -> dict[str, Any]:
    """What the provenance record holds beside the counts: enough for ``prepare_join``."""
    out: dict[str, Any] = {"strategy": ws.strategy, "out_of_range": ws.out_of_range}
    if ws.strategy == "local":
        out["local_trials"] = ws.local_trials
    if other_url:
        out["storage"] = store.mask_url(other_url)
    return out


def _from_record(spec: StudySpec, record: dict[str, Any]) -> WarmStartSpec | None:
    """The warm start a study's record describes; None (with a warning) when its sources'
    storage cannot be reopened because the record masks a password."""
    mine = spec.warm_start
    strategy = str(record.get("strategy", "enqueue"))
    names = tuple(record["sources"])
    url = record.get("storage")
    if url is not None and mine is not None and mine.storage and store.mask_url(mine.storage) == url:
        url = mine.storage                       # the file names the same storage, unmasked
    elif url is not None and ":***@" in url:
        _log.warning("joining study %r: it was warm-started (%s) from %s in %s, whose password "
                     "the study's record masks; give that URL as warm_start.storage in this file "
                     "to sample as the other processes do. Sampling without the %s strategy.",
                     spec.study, strategy, ", ".join(names), url, strategy)
        return None
    if mine is not None and (mine.strategy != strategy or
                             (tuple(mine.sources) != (AUTO,) and set(mine.sources) != set(names))):
        _log.warning("joining study %r: it was warm-started (%s) from %s; this file's warm_start "
                     "(%s from %s) is ignored so that every process samples alike", spec.study,
                     strategy, ", ".join(names), mine.strategy, ", ".join(mine.sources))
    defaults = mine or WarmStartSpec()
    return WarmStartSpec(sources=names, storage=url, strategy=strategy,
                         out_of_range=record.get("out_of_range", defaults.out_of_range),
                         local_trials=int(record.get("local_trials", defaults.local_trials)),
                         best_k=defaults.best_k)


# ---- sources ------------------------------------------------------------------------------

def _source_storage(ws: WarmStartSpec, spec: StudySpec, storage: BaseStorage | str,
                    opener: Callable[[str], BaseStorage] | None = None
                    ) -> tuple[BaseStorage, str | None]:
    """The storage holding the sources, and its URL when it is not the study's own."""
    opener = opener or store.open_storage
    if ws.storage is None or ws.storage == spec.storage:
        return (opener(storage) if isinstance(storage, str) else storage), None
    path = store.sqlite_path(ws.storage) if store.is_sqlite(ws.storage) else None
    if path is not None and not path.exists():   # opening would create an empty database there
        raise WarmStartError(f"warm_start.storage: {store.mask_url(ws.storage)}: no such file {path}")
    try:
        return opener(ws.storage), ws.storage
    except store.StoreError as exc:
        raise WarmStartError(f"warm_start.storage: {exc}") from None


def _read_sources(spec: StudySpec, ws: WarmStartSpec, storage: BaseStorage, other_url: str | None,
                  dists: dict[str, BaseDistribution]) -> list[tuple[str, list[FrozenTrial]]]:
    studies = {s.study_name: s for s in storage.get_all_studies()}
    where = f" in {store.mask_url(other_url)}" if other_url else ""
    if other_url is None:   # in another storage, a study of the same name is an earlier one
        studies.pop(spec.study, None)
    if tuple(ws.sources) == (AUTO,):
        return _pick_auto(spec, storage, studies, dists, where)
    out = []
    for name in ws.sources:
        if name == spec.study and other_url is None:
            raise WarmStartError(f"warm_start: study {name!r} cannot warm-start from itself")
        if name not in studies:
            available = ", ".join(sorted(studies)) or "none"
            raise WarmStartError(f"warm_start: no study named {name!r}{where}; "
                                 f"available studies: {available}")
        _check_directions(name, studies[name].directions, spec.directions)
        out.append((name, _finished_trials(storage, studies[name])))
    return out


def _finished_trials(storage: BaseStorage, frozen_study: Any) -> list[FrozenTrial]:
    return storage.get_all_trials(study_id_of(frozen_study), deepcopy=False,
                                  states=(TrialState.COMPLETE, TrialState.PRUNED))


def _check_directions(name: str, have: Sequence[Any], want: Sequence[str]) -> None:
    have_names = [d.name.lower() for d in have]
    if have_names != [w.lower() for w in want]:
        raise WarmStartError(f"warm_start: study {name!r} has directions {have_names}, this study "
                             f"{list(want)}; a warm start needs the same objectives in the same order")


def _pick_auto(spec: StudySpec, storage: BaseStorage, studies: dict[str, Any],
               dists: dict[str, BaseDistribution], where: str) -> list[tuple[str, list[FrozenTrial]]]:
    want = [d.lower() for d in spec.directions]
    scored = []
    for name, s in studies.items():
        if [d.name.lower() for d in s.directions] != want:
            continue
        trials = _finished_trials(storage, s)
        seen: dict[str, set[type]] = {}
        for t in trials:
            for pname, d in t.distributions.items():
                seen.setdefault(pname, set()).add(type(d))
        score = space_overlap(dists, seen)
        if trials and score >= AUTO_MIN_OVERLAP:
            scored.append((score, study_id_of(s), name, trials))
    scored.sort(key=lambda x: (-x[0], -x[1]))   # most overlap, then the most recent
    picked = scored[:AUTO_MAX_SOURCES]
    if not picked:
        _log.info("warm start (auto): no earlier study%s shares %.0f%% of this search space; "
                  "starting cold", where, 100 * AUTO_MIN_OVERLAP)
    for score, _, name, trials in picked:
        _log.info("warm start (auto): %s (%d trials, %.0f%% of the space shared)",
                  name, len(trials), 100 * score)
    return [(name, trials) for _, _, name, trials in picked]


def _carry(spec: StudySpec, ws: WarmStartSpec, name: str, trials: list[FrozenTrial],
           dists: dict[str, BaseDistribution]) -> _Source:
    seen = {p for t in trials for p in t.params}
    if trials and not seen & set(dists):
        raise WarmStartError(
            f"warm_start: study {name!r} has nothing in common with this search space: its "
            f"parameters are {sorted(seen)}, this study's {sorted(dists)}")
    new, gone = sorted(set(dists) - seen), sorted(seen - set(dists))
    if trials and (new or gone):
        _log.warning("warm start from %r: parameters new here (left to the sampler): %s; "
                     "not in this space (ignored): %s", name, new or "none", gone or "none")
    carried = tuple(carry_params(t.params, spec.space, dists, ws.out_of_range) for t in trials)
    if not trials or not any(carried):
        _log.warning("warm start from %r: no finished trial carries a value valid in this space",
                     name)
    return _Source(name, tuple(trials), carried)


def _counts(sources: list[_Source], count: Callable[[_Source], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sources:
        out[s.name] = out.get(s.name, 0) + count(s)
    return out


# ---- prior ----------------------------------------------------------------------------------

def _prior_trials(sources: list[_Source], dists: dict[str, BaseDistribution]) -> list[FrozenTrial]:
    """The carried trials as FrozenTrials of the new space, oldest first, all numbered -1.

    -1 sorts before every own trial; one number for all because Optuna's IntersectionSearchSpace
    caches by trial number with -1 as "nothing seen yet" and would stop at the first number below
    it, hiding all but one source trial from the search space."""
    out = []
    for s in sources:
        for t, params in zip(s.trials, s.carried):
            if not params:
                continue
            pruned = t.state == TrialState.PRUNED
            ft = optuna.trial.create_trial(
                state=t.state, values=None if pruned else t.values, params=params,
                distributions={n: dists[n] for n in params}, user_attrs={SOURCE_ATTR: s.name},
                intermediate_values=dict(t.intermediate_values) if pruned else None)
            out.append(ft)
    for ft in out:
        ft.number = -1
        set_trial_id(ft, -1)
    return out


def _record_apply(counts: dict[str, int], settings: dict[str, Any]) -> Apply:
    def apply(study: optuna.Study) -> dict[str, int]:
        _record(study, counts, settings)
        return dict(counts)
    return apply


def _record(study: optuna.Study, counts: dict[str, int], settings: dict[str, Any]) -> None:
    study.set_user_attr(PROVENANCE_ATTR, {"strategy": settings["strategy"], "sources": dict(counts),
                                          **{k: v for k, v in settings.items() if k != "strategy"}})


# ---- enqueue --------------------------------------------------------------------------------

def _apply_enqueue(study: optuna.Study, sources: list[_Source], top_k: int,
                   directions: Sequence[str], settings: dict[str, Any]) -> dict[str, int]:
    """Enqueue each source's best ``top_k`` carried configurations, once: a source that already
    has trials in the study (an earlier run of this study) is not enqueued again."""
    done = _counts_in_study(study)
    counts = {}
    for s in sources:
        if s.name in done:
            counts[s.name] = done[s.name]
            continue
        configs = _best_configs(s, top_k, directions)
        for params in configs:
            study.enqueue_trial(params, user_attrs={SOURCE_ATTR: s.name})
        counts[s.name] = len(configs)
    _record(study, counts, settings)
    return counts


def _counts_in_study(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get(SOURCE_ATTR)
        if name is not None:
            out[name] = out.get(name, 0) + 1
    return out


def _best_configs(s: _Source, top_k: int, directions: Sequence[str]) -> list[dict[str, Any]]:
    signs = [1.0 if d.lower() == "minimize" else -1.0 for d in directions]
    keyed = [([v * sg for v, sg in zip(t.values, signs)], params)
             for t, params in zip(s.trials, s.carried) if params and t.state == TrialState.COMPLETE]
    configs: list[dict[str, Any]] = []
    for _, params in _pareto_sorted(keyed):
        if params not in configs:   # clipping can map two trials onto one configuration
            configs.append(params)
        if len(configs) == top_k:
            break
    return configs


def _pareto_sorted(keyed: list[tuple[list[float], Any]]) -> list[tuple[list[float], Any]]:
    """Best first: by non-dominated front (all minimized), then by the first objective."""
    if all(len(v) == 1 for v, _ in keyed):
        return sorted(keyed, key=lambda k: k[0])
    rest, out = list(keyed), []
    while rest:
        front = [k for k in rest if not any(_dominates(o[0], k[0]) for o in rest)]
        out += sorted(front, key=lambda k: k[0])
        rest = [k for k in rest if not any(k is f for f in front)]
    return out


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
