"""Study YAML -> a typed, validated ``StudySpec`` (the frozen dataclasses of ``spec_types``).

Owns: the study file's sections (objectives, optimizer, pruner, budget, parallel, warm start,
trainer / fixed, constraints), both the native form and the flat ``optimization:`` form, the keys
each section allows (``section_keys``, also the source of the JSON Schema of ``spec_schema``),
and the one-off overrides of ``autotune run``. Reading the file is ``spec_yaml``'s, the search
space ``spec_space``'s, the value checkers ``spec_checks``'; what the built-in objective accepts
(knob names and types, its metrics, a task and routing that can exist) and importing a user's
objective are ``objective_ref``'s, which this module calls.
For the built-in objective every knob name goes through the alias table of ``autotune/knobs.py``
(``learning_rate`` -> ``lr``, ``sparsity`` -> ``1 - keep_ratio``), so the spec holds canonical
names only; a flat study gets the machine-sized defaults of ``knobs.flat_defaults``.
Every problem raises ``SpecError`` naming the file, the key path and the fix; nothing downstream
reads raw dicts.
Must not know about: Optuna internals, torch (it imports neither).

Example::

    >>> spec = load_spec("studies/quickstart.yaml")          # doctest: +SKIP
    >>> spec.objectives[0].metric, spec.budget.trials       # doctest: +SKIP
    ('val_loss', 8)
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

from autotune import knobs
from autotune.objective_ref import (BUILTIN_PREFIX, check_batching, check_builtin_data, check_builtin_knobs,
                                    check_metrics, check_objective_ref)
from autotune.spec_checks import (SpecError, _check_fraction, _Ctx, _join, _kind,  # noqa: F401 - re-exported
                                  parse_duration)
from autotune.spec_space import _FLAT_PARAM_NAMES, _PARAM_KEYS, _parse_space
from autotune.spec_types import (OPTIMIZER_KINDS, PRUNER_KINDS, WARM_START_STRATEGIES, BudgetSpec,
                                 ConstraintSpec, ObjectiveSpec, OptimizerSpec, ParallelSpec, PrunerSpec,
                                 StudySpec, WarmStartSpec)
from autotune.spec_yaml import MAX_FILE_BYTES, _read_yaml  # noqa: F401 - MAX_FILE_BYTES re-exported


def _knob_mapping(ctx: _Ctx, raw: Any, key: str) -> tuple[tuple[str, Any], ...]:
    """``trainer:`` or ``fixed:`` with each knob under its canonical name (``sparsity: 0.8`` is
    ``keep_ratio: 0.2``)."""
    out = {}
    for name, value in _plain_mapping(ctx, raw, key):
        canonical, complemented = ctx.knob(name, _join(key, name))
        if complemented:
            _check_fraction(ctx, _join(key, name), value)
            value = knobs.complement(value)
        out[canonical] = value
    return tuple(sorted(out.items()))


# --- sections ---------------------------------------------------------------------------------

_STUDY_KEYS = ("study", "description", "storage", "space", "objectives", "optimizer", "pruner",
               "budget", "parallel", "warm_start", "objective", "trainer", "fixed", "constraints")
_FLAT_TOP_KEYS = ("optimization", "study", "description", "storage", "objective", "trainer",
                  "fixed", "pruner", "warm_start", "constraints")
_FLAT_KEYS = ("algorithm", "max_evals", "parallel_evals", "metrics", "parameters", "seed",
              "timeout")
_OBJECTIVE_KEYS = ("metric", "direction")
_FLAT_METRIC_KEYS = ("name", "goal")
_PRUNER_KEYS = tuple(f.name for f in dataclasses.fields(PrunerSpec))
_BUDGET_KEYS = ("trials", "timeout", "gpu_hours", "trial_timeout")
_WARM_START_KEYS = ("from", "storage", "strategy", "best_k", "out_of_range", "local_trials")
_FLAT_ALGORITHMS = {"bayesian": "tpe", "evolutionary": "evolution", "hybrid": "hybrid",
                    "random": "random", "tpe": "tpe", "gp": "gp"}


def section_keys() -> dict[str, tuple[str, ...]]:
    """The keys each part of a study file allows, as the parser checks them (``""``: the top
    level; ``flat`` / ``optimization``: the flat form's); the source of ``spec_schema``'s JSON Schema."""
    return {"": _STUDY_KEYS, "objectives[]": _OBJECTIVE_KEYS, "pruner": _PRUNER_KEYS,
            "budget": _BUDGET_KEYS, "warm_start": _WARM_START_KEYS, "space.*": _PARAM_KEYS,
            "parallel": tuple(f.name for f in dataclasses.fields(ParallelSpec)
                             if f.name not in ("evals", "searched_width", "widest", "width_key")),
            "flat": _FLAT_TOP_KEYS, "optimization": _FLAT_KEYS,
            "optimization.metrics[]": _FLAT_METRIC_KEYS,
            "optimization.parameters.*": _PARAM_KEYS + tuple(_FLAT_PARAM_NAMES)}


def _parse_objectives(ctx: _Ctx, raw: Any, key: str) -> tuple[ObjectiveSpec, ...]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ctx.fail(key, "must be a list of {metric: NAME, direction: minimize|maximize}")
    out = []
    for i, item in enumerate(raw):
        ikey = _join(key, i)
        item = ctx.mapping(item, ikey)
        ctx.keys(item, ikey, _OBJECTIVE_KEYS, required=_OBJECTIVE_KEYS)
        out.append(ObjectiveSpec(ctx.text(item["metric"], _join(ikey, "metric")),
                                 ctx.text(item["direction"], _join(ikey, "direction"),
                                          ("minimize", "maximize"))))
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise ctx.fail(key, f"names a metric twice: {names}")
    return tuple(out)


def _parse_optimizer(ctx: _Ctx, raw: Any, key: str, n_objectives: int) -> OptimizerSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    raw = ctx.mapping(raw, key)
    kind = ctx.text(raw.get("kind", "tpe"), _join(key, "kind"), OPTIMIZER_KINDS)
    seed = raw.get("seed")
    if seed is not None:
        seed = ctx.number(seed, _join(key, "seed"), integer=True, minimum=0)
    options = {k: v for k, v in raw.items() if k not in ("kind", "seed")}
    from autotune.samplers import check_sampler_options
    try:
        check_sampler_options(kind, options, n_objectives)
    except ValueError as exc:
        sub, _, problem = str(exc).partition(": ")
        if not problem:
            sub, problem = "kind", str(exc)
        raise ctx.fail(_join(key, sub), problem) from None
    return OptimizerSpec(kind, seed, tuple(sorted(options.items())))


def _parse_pruner(ctx: _Ctx, raw: Any, key: str, n_objectives: int) -> PrunerSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    raw = ctx.mapping(raw, key)
    ctx.keys(raw, key, _PRUNER_KEYS)
    kind = ctx.text(raw.get("kind", "none"), _join(key, "kind"), PRUNER_KINDS)
    values: dict[str, Any] = {"kind": kind}
    if raw.get("metric") is not None:
        values["metric"] = ctx.text(raw["metric"], _join(key, "metric"))
    if kind == "pareto" and n_objectives < 2:
        raise ctx.fail(_join(key, "kind"), "pareto judges several objectives; with one, prune with "
                                           "kind: median, percentile, sha or hyperband")
    if kind == "pareto" and "metric" in values:
        raise ctx.fail(_join(key, "metric"), "pareto judges every objective; drop metric, or prune "
                                             "on that one with kind: median or percentile")
    if kind not in ("none", "pareto") and n_objectives > 1 and (kind not in ("median", "percentile")
                                                              or "metric" not in values):
        raise ctx.fail(_join(key, "kind"), "with several objectives, prune with kind: pareto, or "
                                           "median or percentile and metric: one of the objectives' metrics")
    if "dominated_by" in raw:
        share = ctx.number(raw["dominated_by"], _join(key, "dominated_by"))
        if not 0 < share <= 1:
            raise ctx.fail(_join(key, "dominated_by"), f"must be a share of the peers in (0, 1], got {share}")
        values["dominated_by"] = float(share)
    for name in ("min_steps", "reduction_factor", "startup_trials", "interval_steps"):
        if name in raw:
            values[name] = ctx.number(raw[name], _join(key, name), integer=True, minimum=0)
    if "max_steps" in raw and raw["max_steps"] is not None:
        values["max_steps"] = ctx.number(raw["max_steps"], _join(key, "max_steps"), integer=True,
                                         positive=True)
    if "percentile" in raw:
        pct = ctx.number(raw["percentile"], _join(key, "percentile"))
        if not 0 < pct < 100:
            raise ctx.fail(_join(key, "percentile"), f"must be between 0 and 100, got {pct}")
        values["percentile"] = float(pct)
    if values.get("reduction_factor", 3) < 2:
        raise ctx.fail(_join(key, "reduction_factor"), "must be >= 2")
    if values.get("interval_steps", 1) < 1:
        raise ctx.fail(_join(key, "interval_steps"), "must be >= 1")
    return PrunerSpec(**values)


def _check_pareto_can_judge(ctx: _Ctx, objective: str, pruner: PrunerSpec,
                            objectives: tuple[ObjectiveSpec, ...]) -> None:
    """The built-in trainer returns some metrics only at the end (``BUILTIN_FINAL_METRICS``):
    pareto cannot judge those at a rung, and refuses a study whose objectives are all such."""
    if pruner.kind != "pareto" or not objective.startswith(BUILTIN_PREFIX):
        return
    from autotune.train_config import BUILTIN_FINAL_METRICS
    if all(o.metric in BUILTIN_FINAL_METRICS for o in objectives):
        raise ctx.fail("pruner.kind", f"pareto judges the objectives as reported at each evaluation, "
                                      f"and {objective} reports {', '.join(o.metric for o in objectives)} "
                                      "only at the end; prune with kind: none")


def _parse_budget(ctx: _Ctx, raw: Any, key: str) -> BudgetSpec:
    raw = ctx.mapping(raw, key)
    ctx.keys(raw, key, _BUDGET_KEYS)
    trials = raw.get("trials")
    if trials is not None:
        trials = ctx.number(trials, _join(key, "trials"), integer=True, positive=True)
    timeout = raw.get("timeout")
    if timeout is not None:
        timeout = parse_duration(timeout, ctx, _join(key, "timeout"))
    gpu_hours = raw.get("gpu_hours")
    if gpu_hours is not None:
        gpu_hours = float(ctx.number(gpu_hours, _join(key, "gpu_hours"), positive=True))
    if trials is None and timeout is None and gpu_hours is None:
        raise ctx.fail(key, "needs at least one of trials, timeout, gpu_hours (else the study never ends)")
    trial_timeout = raw.get("trial_timeout")
    if trial_timeout is not None:
        trial_timeout = parse_duration(trial_timeout, ctx, _join(key, "trial_timeout"))
    return BudgetSpec(trials, timeout, gpu_hours, trial_timeout)


def _parse_parallel(ctx: _Ctx, raw: Any, key: str) -> ParallelSpec:
    raw = ctx.mapping(raw, key)
    ctx.keys(raw, key, section_keys()["parallel"])
    values: dict[str, Any] = {}
    gpus = raw.get("gpus", "auto")
    gkey = _join(key, "gpus")
    if isinstance(gpus, list):
        ids = tuple(ctx.number(g, _join(gkey, i), integer=True, minimum=0) for i, g in enumerate(gpus))
        if len(set(ids)) != len(ids):
            raise ctx.fail(gkey, f"lists a GPU twice: {list(ids)}")
        values["gpus"] = ids
    elif isinstance(gpus, str):
        values["gpus"] = ctx.text(gpus, gkey, ("auto",))
    else:
        values["gpus"] = ctx.number(gpus, gkey, integer=True, minimum=0)
    values["fit_cores"] = ctx.boolean(raw.get("fit_cores", True), _join(key, "fit_cores"))
    values["mps"] = ctx.boolean(raw.get("mps", False), _join(key, "mps"))
    for name, minimum in (("trials_per_gpu", 1), ("workers", 1), ("max_retries", 0),
                          ("heartbeat_interval", 1), ("grace_period", 1), ("gpus_per_trial", 1),
                          ("procs_per_trial", 1)):
        if raw.get(name) is not None:
            values[name] = ctx.number(raw[name], _join(key, name), integer=True, minimum=minimum)
    spec = ParallelSpec(**values)
    if spec.grace_period <= spec.heartbeat_interval:
        raise ctx.fail(_join(key, "grace_period"),
                       f"must exceed heartbeat_interval ({spec.heartbeat_interval} s)")
    _check_ranks(ctx, spec, key)
    return spec


def _check_ranks(ctx: _Ctx, spec: ParallelSpec, key: str) -> None:
    """Trials over several processes (issue 21): GPUs or CPU processes, not both; a slot of
    several GPUs holds one trial."""
    if spec.gpus_per_trial > 1 and spec.procs_per_trial > 1:
        raise ctx.fail(_join(key, "procs_per_trial"),
                       "cannot go with gpus_per_trial: a trial's ranks run on GPUs "
                       "(gpus_per_trial, NCCL) or on the CPU (procs_per_trial, gloo)")
    if spec.gpus_per_trial > 1 and spec.trials_per_gpu > 1:
        raise ctx.fail(_join(key, "trials_per_gpu"),
                       f"must be 1 with gpus_per_trial {spec.gpus_per_trial}: a trial over several "
                       "GPUs has them to itself")
    if spec.gpus_per_trial > 1 and spec.gpus == 0:
        raise ctx.fail(_join(key, "gpus_per_trial"),
                       "asks for GPUs while parallel.gpus is 0; use procs_per_trial for CPU ranks")


WIDTH_KNOBS = ("gpus_per_trial", "procs_per_trial")   # a trial's width, searchable in the space


def _searched_width(ctx: _Ctx, space: SearchSpace, parallel: ParallelSpec,
                    space_key: str) -> ParallelSpec:
    """``parallel`` with the trial width the space searches, if any (issue 21): ``gpus_per_trial``
    or ``procs_per_trial`` as an int or categorical parameter, every value a whole number >= 1,
    not also set under ``parallel``."""
    found = [p for p in space.params if p.name in WIDTH_KNOBS]
    if not found:
        return parallel
    if len(found) > 1:
        raise ctx.fail(_join(space_key, found[1].name),
                       f"cannot be searched with {found[0].name}: a trial's ranks run on GPUs "
                       "(gpus_per_trial, NCCL) or on the CPU (procs_per_trial, gloo)")
    param = found[0]
    key = _join(space_key, param.name)
    if param.type == "int":
        values = [param.low, param.high]
        if param.step not in (None, 1) or param.log:
            values = list(range(int(param.low), int(param.high) + 1))
    elif param.type == "categorical":
        values = list(param.choices)
    else:
        raise ctx.fail(key, "must be an int or categorical parameter (a number of ranks), "
                            f"not {param.type}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ctx.fail(key, f"every value must be a whole number >= 1 (ranks of one trial), "
                                f"got {value!r}")
    if parallel.ranks_per_trial > 1:
        fixed = "gpus_per_trial" if parallel.gpus_per_trial > 1 else "procs_per_trial"
        raise ctx.fail(key, f"is searched while parallel.{fixed} is set; keep one of them")
    if param.name == "gpus_per_trial" and parallel.trials_per_gpu > 1:
        raise ctx.fail("parallel.trials_per_gpu",
                       f"must be 1 with {key} searched: a trial over several GPUs has them to itself")
    if param.name == "gpus_per_trial" and parallel.gpus == 0:
        raise ctx.fail(key, "asks for GPUs while parallel.gpus is 0; search procs_per_trial "
                            "for CPU ranks")
    return dataclasses.replace(parallel, searched_width=param.name, widest=max(values),
                               width_key=key)


def check_gpus_per_trial(spec: StudySpec, gpus_found: int, cores: int | None = None) -> None:
    """At run time: ``parallel.gpus_per_trial`` fits the GPUs this run may use (``gpus_found``);
    a searched width's largest value fits those GPUs, or ``cores`` for ``procs_per_trial``."""
    searched = spec.parallel.searched_width
    have = {"gpus_per_trial": gpus_found, "procs_per_trial": cores}.get(searched or "")
    if have is not None and spec.parallel.widest > have:
        what = "GPU(s) (parallel.gpus, CUDA_VISIBLE_DEVICES)" if searched == "gpus_per_trial" \
            else "usable CPU core(s)"
        raise SpecError(spec.path, spec.parallel.width_key,
                        f"may draw {spec.parallel.widest} ranks per trial, but this run has {have} "
                        f"{what}; lower its largest value")
    need = spec.parallel.gpus_per_trial
    if need > 1 and gpus_found < need:
        raise SpecError(spec.path, "parallel.gpus_per_trial",
                        f"asks for {need} GPUs per trial, but this run has {gpus_found} GPU(s) "
                        "(parallel.gpus, CUDA_VISIBLE_DEVICES); lower it, or use procs_per_trial "
                        "to run the ranks on the CPU")


def _parse_warm_start(ctx: _Ctx, raw: Any, key: str, n_objectives: int) -> WarmStartSpec | None:
    if raw is None:
        return None
    if isinstance(raw, (str, list)):
        raw = {"from": raw}
    raw = ctx.mapping(raw, key)
    if "top_k" in raw:   # renamed: routing's top_k is the experts a token uses
        raise ctx.fail(_join(key, "top_k"), "is now best_k (the best configurations of each source "
                                            "to re-evaluate); rename the key")
    ctx.keys(raw, key, _WARM_START_KEYS, required=("from",))
    sources = raw["from"]
    sources = [sources] if isinstance(sources, str) else sources
    if not isinstance(sources, list) or not sources:
        raise ctx.fail(_join(key, "from"), "must name one or more earlier studies, or auto")
    names = tuple(ctx.text(s, _join(_join(key, "from"), i)) for i, s in enumerate(sources))
    if "auto" in names and len(names) > 1:
        raise ctx.fail(_join(key, "from"), "auto picks the sources itself; give it alone")
    values: dict[str, Any] = {"sources": names}
    if raw.get("storage") is not None:
        values["storage"] = _parse_storage(ctx, raw["storage"], _join(key, "storage"))
    if "strategy" in raw:
        values["strategy"] = ctx.text(raw["strategy"], _join(key, "strategy"), WARM_START_STRATEGIES)
    if "out_of_range" in raw:
        values["out_of_range"] = ctx.text(raw["out_of_range"], _join(key, "out_of_range"),
                                          ("clip", "drop"))
    strategy = values.get("strategy", WarmStartSpec.strategy)
    if "best_k" in raw:
        if strategy != "enqueue":
            raise ctx.fail(_join(key, "best_k"),
                           f"only strategy enqueue uses it (this file's strategy: {strategy})")
        values["best_k"] = ctx.number(raw["best_k"], _join(key, "best_k"), integer=True, positive=True)
    if "local_trials" in raw:
        if strategy != "local":
            raise ctx.fail(_join(key, "local_trials"),
                           f"only strategy local uses it (this file's strategy: {strategy})")
        values["local_trials"] = ctx.number(raw["local_trials"], _join(key, "local_trials"),
                                            integer=True, positive=True)
    if strategy == "local" and n_objectives > 1:
        raise ctx.fail(_join(key, "strategy"), f"local needs a single objective (this study has "
                                               f"{n_objectives}); use prior")
    return WarmStartSpec(**values)


GENETIC_KINDS = ("evolution", "nsga2")   # breed only from the study's own trials


def _check_warm_start_fits_optimizer(ctx: _Ctx, warm_start: WarmStartSpec | None,
                                     optimizer: OptimizerSpec) -> None:
    """The ``prior`` strategy shows earlier trials to the optimizer as if they were the study's;
    a genetic algorithm breeds only from the study's own trials (NSGA-II's generations, evolution's
    elite), so the prior would change nothing for it: say so instead of warm-starting silently in
    name only."""
    if warm_start is not None and warm_start.strategy == "prior" and optimizer.kind in GENETIC_KINDS:
        raise ctx.fail("warm_start.strategy",
                       f"prior cannot inform optimizer {optimizer.kind} (a genetic algorithm breeds "
                       "only from the study's own trials); use strategy enqueue, which "
                       "re-evaluates the earlier studies' best configurations first")


def _parse_storage(ctx: _Ctx, raw: Any, key: str) -> str:
    from autotune.store import StoreError, check_storage_url
    url = ctx.text(raw, key)
    try:
        check_storage_url(url)
    except StoreError as exc:
        raise ctx.fail(key, str(exc)) from None
    return url


_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>|=<|=>|==|=|!=)\s*(\S.*?)\s*$")


def _parse_constraints(ctx: _Ctx, raw: Any, key: str) -> tuple[ConstraintSpec, ...]:
    """``["peak_mem_mb <= 40000", "latency_ms <= 5"]``: a metric, ``<=`` or ``>=``, a number."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ctx.fail(key, f"must be a list of texts such as \"peak_mem_mb <= 40000\", got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        ikey = _join(key, i)
        if not isinstance(item, str):
            raise ctx.fail(ikey, f"must be a text such as \"latency_ms <= 5\", got {_kind(item)}")
        match = _CONSTRAINT_RE.match(item)
        if match is None:
            raise ctx.fail(ikey, f"{item!r} is not METRIC <= NUMBER or METRIC >= NUMBER")
        metric, op, bound = match.groups()
        if op not in ("<=", ">="):
            fix = {"<": "<=", "=<": "<=", ">": ">=", "=>": ">="}.get(op)
            hint = f"; write {metric} {fix} {bound}" if fix else ""
            raise ctx.fail(ikey, f"operator {op!r} is not supported: use <= or >={hint}")
        try:
            value = float(bound)
        except ValueError:
            raise ctx.fail(ikey, f"bound {bound!r} is not a number") from None
        if not math.isfinite(value):
            raise ctx.fail(ikey, f"bound {bound!r} is not a finite number")
        out.append(ConstraintSpec(metric, op, value))
    return tuple(out)


def _check_constraint_metrics(ctx: _Ctx, objective: str, constraints: tuple[ConstraintSpec, ...],
                              key: str) -> None:
    """As ``check_metrics``: a built-in objective's constraints name metrics it reports."""
    check_metrics(ctx, objective, tuple(ObjectiveSpec(c.metric, "minimize") for c in constraints),
                   key, leaf=False)


def _plain_mapping(ctx: _Ctx, raw: Any, key: str) -> tuple[tuple[str, Any], ...]:
    raw = ctx.mapping(raw, key)
    for k, v in raw.items():
        if isinstance(v, (dict, list)) and key == "fixed":
            raise ctx.fail(_join(key, k), "fixed values are single numbers, texts or booleans")
    return tuple(sorted((str(k), v) for k, v in raw.items()))


# --- the two forms ----------------------------------------------------------------------------

def _native(ctx: _Ctx, raw: dict, base_dir: Path, default_name: str) -> dict[str, Any]:
    ctx.keys(raw, "", _STUDY_KEYS, required=("space", "objectives"))
    objectives = _parse_objectives(ctx, raw["objectives"], "objectives")
    return {
        "study": ctx.text(raw.get("study", default_name), "study"),
        "storage": _parse_storage(ctx, raw["storage"], "storage") if raw.get("storage") else None,
        "space": _parse_space(ctx, raw["space"], "space", base_dir),
        "space_key": "space" if not isinstance(raw["space"], str) else "space",
        "objectives": objectives,
        "optimizer": _parse_optimizer(ctx, raw.get("optimizer"), "optimizer", len(objectives)),
        "pruner": _parse_pruner(ctx, raw.get("pruner"), "pruner", len(objectives)),
        "budget": _parse_budget(ctx, raw.get("budget", {"trials": 20}), "budget"),
        "parallel": _parse_parallel(ctx, raw.get("parallel"), "parallel"),
        "warm_start": _parse_warm_start(ctx, raw.get("warm_start"), "warm_start", len(objectives)),
        "objective": check_objective_ref(ctx, raw.get("objective", "builtin:moe_lm"), "objective"),
        "trainer": _knob_mapping(ctx, raw.get("trainer"), "trainer"),
        "fixed": _knob_mapping(ctx, raw.get("fixed"), "fixed"),
        "constraints": _parse_constraints(ctx, raw.get("constraints"), "constraints"),
    }


def _flat(ctx: _Ctx, raw: dict, base_dir: Path, default_name: str) -> dict[str, Any]:
    ctx.keys(raw, "", _FLAT_TOP_KEYS, required=("optimization",))
    opt = ctx.mapping(raw["optimization"], "optimization")
    ctx.keys(opt, "optimization", _FLAT_KEYS, required=("metrics", "parameters"))
    algorithm = ctx.text(opt.get("algorithm", "bayesian"), "optimization.algorithm",
                         tuple(_FLAT_ALGORITHMS))
    metrics = opt["metrics"]
    if not isinstance(metrics, list) or not metrics:
        raise ctx.fail("optimization.metrics", "must be a list of {name: METRIC, goal: minimize|maximize}")
    objectives = []
    for i, m in enumerate(metrics):
        mkey = _join("optimization.metrics", i)
        m = ctx.mapping(m, mkey)
        ctx.keys(m, mkey, _FLAT_METRIC_KEYS, required=_FLAT_METRIC_KEYS)
        objectives.append(ObjectiveSpec(ctx.text(m["name"], _join(mkey, "name")),
                                        ctx.text(m["goal"], _join(mkey, "goal"), ("minimize", "maximize"))))
    objectives_t = tuple(objectives)
    if len({o.metric for o in objectives_t}) != len(objectives_t):
        raise ctx.fail("optimization.metrics", "names a metric twice")
    trials = None
    if "max_evals" in opt:
        trials = ctx.number(opt["max_evals"], "optimization.max_evals", integer=True, positive=True)
    timeout = parse_duration(opt["timeout"], ctx, "optimization.timeout") if "timeout" in opt else None
    if trials is None and timeout is None:
        trials = 20
    parallel = ParallelSpec(fit_cores=True)
    if "parallel_evals" in opt:
        workers = ctx.number(opt["parallel_evals"], "optimization.parallel_evals", integer=True, positive=True)
        parallel = ParallelSpec(workers=workers, evals=workers, fit_cores=True)
    seed = opt.get("seed")
    optimizer = {"kind": _FLAT_ALGORITHMS[algorithm]}
    if seed is not None:
        optimizer["seed"] = seed
    values = {
        "study": ctx.text(raw.get("study", default_name), "study"),
        "storage": _parse_storage(ctx, raw["storage"], "storage") if raw.get("storage") else None,
        "space": _parse_space(ctx, opt["parameters"], "optimization.parameters", base_dir, flat=True),
        "space_key": "optimization.parameters",
        "objectives": objectives_t,
        "optimizer": _parse_optimizer(ctx, optimizer, "optimization.algorithm", len(objectives_t)),
        "pruner": _parse_pruner(ctx, raw.get("pruner"), "pruner", len(objectives_t)),
        "budget": BudgetSpec(trials=trials, timeout_s=timeout),
        "parallel": parallel,
        "warm_start": _parse_warm_start(ctx, raw.get("warm_start"), "warm_start",
                                        len(objectives_t)),
        "objective": check_objective_ref(ctx, raw.get("objective", "builtin:moe_lm"), "objective"),
        "trainer": _knob_mapping(ctx, raw.get("trainer"), "trainer"),
        "fixed": _knob_mapping(ctx, raw.get("fixed"), "fixed"),
        "constraints": _parse_constraints(ctx, raw.get("constraints"), "constraints"),
    }
    if ctx.aliases:
        _fill_flat_defaults(values)
    return values


def machine_has_gpu() -> bool:
    """Whether this machine has a GPU, asked without torch (``CUDA_VISIBLE_DEVICES``, ``nvidia-smi``)."""
    from autotune.scheduler.gpus import detect_gpus
    return bool(detect_gpus(ask_torch=False))


def _fill_flat_defaults(values: dict[str, Any]) -> None:
    """Give a flat study the machine-sized model / trainer settings (``knobs.flat_defaults``) it
    does not set itself, searched or constant, and record which ones it got."""
    gpu = machine_has_gpu()
    named = set(dict(values["trainer"])) | set(dict(values["fixed"])) | set(values["space"].names)
    settings = {**dict(values["trainer"]), **dict(values["fixed"])}
    if settings.get("task", "mqar") != "mqar":   # the defaults size the built-in recall task
        named |= set(knobs.MQAR_KNOBS)
    used: dict[str, Any] = {}
    for section, defaults in knobs.flat_defaults(gpu).items():
        missing = {k: v for k, v in defaults.items() if k not in named}
        if missing:
            values[section] = tuple(sorted({**dict(values[section]), **missing}.items()))
            used.update(missing)
    values["flat_defaults"] = tuple(used.items())
    values["flat_defaults_for"] = ("gpu" if gpu else "cpu") if used else None


def parse_spec(raw: Any, *, file: Path | None = None, base_dir: Path | None = None,
               default_name: str = "study") -> StudySpec:
    """Validate an already-loaded YAML document (a dict) into a StudySpec."""
    ctx = _Ctx(file)
    if not isinstance(raw, dict) or not raw:
        raise ctx.fail("", f"must be a mapping of study settings (study, space, objectives, ...), "
                           f"got {_kind(raw)}")
    # the built-in objective's knobs have aliases; a user's own function gets its names as written
    if not isinstance(raw.get("description", ""), str):
        raise ctx.fail("description", f"must be text, got {_kind(raw['description'])}")
    ctx.aliases = str(raw.get("objective", BUILTIN_PREFIX)).startswith(BUILTIN_PREFIX)
    base_dir = base_dir or (file.parent if file else Path("."))
    values = (_flat if "optimization" in raw else _native)(ctx, raw, base_dir, default_name)
    space_key = values.pop("space_key")
    _check_warm_start_fits_optimizer(ctx, values["warm_start"], values["optimizer"])
    values["parallel"] = _searched_width(ctx, values["space"], values["parallel"], space_key)
    if values["objective"].startswith(BUILTIN_PREFIX):
        check_builtin_knobs(ctx, values, values["space"], space_key)
        check_batching(ctx, values, space_key)
        check_builtin_data(ctx, values)
    check_metrics(ctx, values["objective"], values["objectives"],
                   "objectives" if "optimization" not in raw else "optimization.metrics")
    _check_constraint_metrics(ctx, values["objective"], values["constraints"], "constraints")
    prune_on = values["pruner"].metric
    if prune_on is not None and prune_on not in [o.metric for o in values["objectives"]]:
        raise ctx.fail("pruner.metric", f"{prune_on!r} is not an objective's metric; "
                                        f"choose one of {', '.join(o.metric for o in values['objectives'])}")
    _check_pareto_can_judge(ctx, values["objective"], values["pruner"], values["objectives"])
    from autotune.store import DEFAULT_STORAGE, ENV_STORAGE
    values["storage"] = values["storage"] or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE
    return StudySpec(path=file, **values)


def load_spec(path: str | Path, **overrides: Any) -> StudySpec:
    """Read and validate a study file, then apply the one-off overrides of ``autotune run``
    (``storage``, ``study``, ``trials``, ``timeout``, ``workers``, ``warm_start``)."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        spec = parse_spec(raw, file=path, base_dir=path.parent, default_name=path.stem)
    except (OverflowError, RecursionError, MemoryError) as exc:   # a check missed a huge value
        raise SpecError(path, "", f"a value is too large to handle ({type(exc).__name__})") from None
    return apply_overrides(spec, **overrides)


def apply_overrides(spec: StudySpec, *, storage: str | None = None, study: str | None = None,
                    trials: int | None = None, timeout: str | float | None = None,
                    workers: int | None = None, warm_start: tuple[str, ...] | None = None
                    ) -> StudySpec:
    changes: dict[str, Any] = {}
    if storage:
        changes["storage"] = _parse_storage(_Ctx(None), storage, "--storage")
    if study:
        changes["study"] = study
    budget = spec.budget
    if trials is not None:
        budget = dataclasses.replace(budget, trials=_Ctx(None).number(trials, "--trials", integer=True,
                                                                      positive=True))
    if timeout is not None:
        budget = dataclasses.replace(budget, timeout_s=parse_duration(timeout, _Ctx(None), "--timeout"))
    changes["budget"] = budget
    if workers is not None:
        changes["parallel"] = dataclasses.replace(
            spec.parallel, workers=_Ctx(None).number(workers, "--workers", integer=True, positive=True))
    if warm_start:
        base = spec.warm_start or WarmStartSpec()
        changes["warm_start"] = dataclasses.replace(base, sources=tuple(warm_start))
    return dataclasses.replace(spec, **changes)
