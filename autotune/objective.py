"""The bridge between a trial and the function that evaluates it.

Owns: merging ``trainer`` + ``fixed`` + sampled parameters; loading the user's objective
(``package.module:function``, through ``objective_ref``, which also holds the built-in objective's
checks of a study file) or the built-in ``moe_lm``; turning ``report(step, metrics)`` into
``trial.report`` / ``trial.should_prune`` (several objectives: the pruner's ``metric`` judged
against finished trials' stored curves, ``pruners.prune_on_curves``, or with ``kind: pareto`` every
objective the trial reports, against finished and running trials' curves,
``pruners.prune_on_front``); turning returned metrics into the study's objective values, stored with all metrics as user attributes, and the study's
constraint values; recording a trial that ran out of GPU memory as infeasible
(``_out_of_memory``) rather than failed.
Must not know about: kernel details, processes (the scheduler runs ``TrialObjective`` in a worker).

A user's objective has this shape::

    def objective(params: dict, report) -> dict:
        for step in range(100):
            loss = ...
            if not report(step, {"val_loss": loss}):   # False: the pruner stopped this trial
                return {"val_loss": loss}
        return {"val_loss": loss}
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping

import optuna

from autotune.compile_policy import compile_cache_dir, compile_costs_from, use_compile_cache
from autotune.constraints import is_out_of_memory, memory_reached_mb, set_constraints
from autotune.outcomes import INFEASIBLE_ATTR, OOM
from autotune.pruners import judged_metrics, prune_on_curves, prune_on_front
from autotune.objective_ref import BUILTIN_PREFIX, import_objective, routing_problem
from autotune.scheduler.policies import trial_width
from autotune.spec_types import StudySpec

Report = Callable[[int, Mapping[str, float]], bool]
Notify = Callable[[int, Mapping[str, float]], None]
CURVE_SAVE_S = 5.0   # several objectives: the growing ``curve`` user attr is stored at most this often
PEER_CURVES_S = 30.0  # several objectives, pruning: finished trials' curves are reread this often


class TrialFailed(Exception):
    """The objective ran but its result cannot be used (missing or non-finite metric)."""


def moe_lm(params: Mapping[str, Any], report: Report, compile_costs: Any = None,
           progress: Notify | None = None) -> dict[str, Any]:
    """The built-in objective: train the MoE / sparse-attention transformer on ``params``.

    ``params`` holds model knobs (``autotune.model.ModelConfig`` fields) and training knobs
    (``autotune.train.TrainConfig`` fields) by name; ``compile_costs`` (``autotune.compile_policy.CompileCosts``)
    is what the study's earlier trials measured of compiling, for ``compile: auto``; ``progress``
    hears of the training steps between evaluations (for a live view).
    """
    from autotune.model.config import ModelConfig
    from autotune.train import TrainConfig, train

    model_names, train_names = ModelConfig.field_names(), {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(params) - model_names - train_names
    if unknown:
        raise TrialFailed(f"builtin:moe_lm has no knobs {sorted(unknown)}")
    problem = routing_problem({**dataclasses.asdict(ModelConfig()), **params})
    if problem:
        raise TrialFailed(problem)
    model_cfg = ModelConfig(**{k: v for k, v in params.items() if k in model_names})
    train_cfg = TrainConfig(**{k: v for k, v in params.items() if k in train_names})
    return train(model_cfg, train_cfg, report, compile_costs, progress)


def split_time(phases: Mapping[str, float], wall_s: float) -> dict[str, float]:
    """The objective's own phases (seconds) plus ``other``: the rest of ``wall_s``."""
    parts = {k: float(v) for k, v in phases.items() if isinstance(v, (int, float))}
    parts["other"] = parts.get("other", 0.0) + max(0.0, wall_s - sum(parts.values()))
    return {k: round(v, 4) for k, v in parts.items()}


def resolve(ref: str, spec: StudySpec | None = None) -> Callable[[dict, Report], Mapping[str, float]]:
    """``builtin:moe_lm`` or ``package.module:function`` -> the function."""
    if ref.startswith(BUILTIN_PREFIX):
        return {"moe_lm": moe_lm}[ref[len(BUILTIN_PREFIX):]]
    return import_objective(ref, spec.path.parent if spec is not None and spec.path else None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist())
    return value


def _jsonable_dict(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in mapping.items()}


def _metric_curve(curve: list, name: str) -> list[tuple[int, float]]:
    """``[(step, value)]`` of one metric from a stored ``curve`` (``[[step, {metric: value}], ...]``)."""
    out = []
    for step, metrics in curve:
        value = metrics.get(name) if isinstance(metrics, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((int(step), float(value)))
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _worst_values(study: optuna.Study, directions: list[str]) -> list[float] | None:
    """The worst value of each objective over the study's completed trials; None if there are none."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    rows = [t.values for t in trials if t.values and all(math.isfinite(v) for v in t.values)]
    if not rows:
        return None
    return [float(max(col) if d == "minimize" else min(col)) for d, col in zip(directions, zip(*rows))]


def _last_step(*candidates: Any) -> int | None:
    """The step at which a trial's run ends (the pruner's ``max_steps``, else ``steps``), if known."""
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class TrialObjective:
    """Picklable: the scheduler runs ``objective(trial_id, params, notify)`` in a worker process.

    Returns the objective values in the spec's order; raises ``optuna.TrialPruned`` when the
    pruner stopped the trial, ``TrialFailed`` when a metric is missing or not finite. A report at
    the run's last step (the pruner's ``max_steps``, else the ``steps`` setting) is recorded but
    not judged: the work is done, so the trial completes rather than being pruned at its end
    (successive halving would otherwise prune at a rung that falls on the last step).
    """

    def __init__(self, spec: StudySpec, storage_url: str):
        self.spec = spec
        self.storage_url = storage_url
        self._study: optuna.Study | None = None  # opened once per worker process
        self._storage = None                     # its RDB storage
        self.last_time_s: dict[str, float] | None = None  # where the last call's time went
        self._helper_pending = False             # warmed up on a GPU: the first trial may prestart

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "storage_url": self.storage_url, "_study": None, "_storage": None,
                "last_time_s": None, "_helper_pending": False}

    @property
    def builtin(self) -> bool:
        return self.spec.objective.startswith(BUILTIN_PREFIX)

    def warm_up(self) -> None:
        """What a worker does before its first trial, while the run opens (or creates) the study:
        for the built-in objective, import torch and the model and start the GPU, with the compile
        caches in place. It does not touch the store (the study may not be there yet): the first
        trial opens it, and then starts the helper that compiles ahead where the study's trials
        have compiled before (``_prestart_helper``)."""
        if self.builtin:
            use_compile_cache(compile_cache_dir(self.storage_url))
            import torch
            import autotune.model.transformer  # noqa: F401 - the imports are the work (Inductor
            import autotune.train  # noqa: F401    # comes with the first compile, if any)
            if torch.cuda.is_available():
                torch.empty(1, device="cuda")
                self._helper_pending = True

    def _prestart_helper(self, study: optuna.Study) -> None:
        """At this worker's first trial: start the compile helper where the study compiled ahead
        before, so that it warms up (a CUDA context, Dynamo's first use) while the trial takes
        its first eager steps rather than at its compile."""
        if self._helper_pending:
            self._helper_pending = False
            if self._compiles_ahead(study):
                from autotune.compile_ahead import prestart
                prestart()

    def _compiles_ahead(self, study: optuna.Study) -> bool:
        """Whether this worker's trials are likely to compile in a helper: ``compile: auto`` and an
        earlier trial of the study did (with a helper)."""
        if self.spec.trainer_dict.get("compile", "auto") != "auto":
            return False
        return any(r.get("ahead") is True for r in self._compile_records(study))

    def _compile_costs(self, study: optuna.Study, params: Mapping[str, Any]):
        """What compiling cost and saved in the study's finished trials so far (every worker's,
        on every machine: read afresh for each trial, one query), for trials like this one."""
        return compile_costs_from(self._compile_records(study), attention=params.get("attention"))

    def _compile_records(self, study: optuna.Study) -> list[dict]:
        """The ``compile`` attrs of the study's finished trials (one query)."""
        from autotune.store import open_storage, study_id_of, trial_user_attr_json
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        if self._storage is None:       # a study handed in rather than opened by _load_study
            self._storage = open_storage(self.storage_url)
        return [r for r in trial_user_attr_json(self._storage, study_id_of(study), "compile", finished)
                if isinstance(r, dict)]

    def _load_study(self) -> optuna.Study:
        if self._study is None:
            from autotune.pruners import build_pruner
            from autotune.store import open_storage
            steps = self.spec.trainer_dict.get("steps")
            self._storage = open_storage(self.storage_url)
            self._study = optuna.load_study(study_name=self.spec.study, storage=self._storage,
                                            pruner=build_pruner(self.spec.pruner, steps))
        return self._study

    def _out_of_memory(self, study: optuna.Study, trial: optuna.trial.Trial,
                       exc: BaseException) -> list[float]:
        """Record a trial that ran out of memory as infeasible, so that the optimizer sees it.

        Optuna's samplers ignore FAIL trials: a failure would teach the search nothing and it would
        keep proposing the region. So the trial completes with the worst value each objective has
        seen (a stand-in, not a measurement; the ``metrics`` attr holds only the memory reached),
        is flagged ``infeasible: oom``, and violates the study's constraints (``out_of_memory``).
        With no finished trial to take a worst value from it fails as before.
        """
        reason = _one_line(exc)
        worst = _worst_values(study, self.spec.directions)
        if worst is None:
            raise TrialFailed(f"out of memory, before any trial finished: {reason}") from exc
        metrics: dict[str, Any] = {}
        reached = memory_reached_mb(exc)
        if reached is not None:
            metrics["peak_mem_mb"] = reached
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr(INFEASIBLE_ATTR, OOM)
        trial.set_user_attr("oom_reason", reason[:2000])
        set_constraints(trial, self.spec.constraints, metrics, out_of_memory=True)
        return worst

    def _on_ranks(self, fn: Callable, width: int) -> Callable:
        """``fn`` itself, or for a trial of ``width`` ranks above 1 (``parallel.gpus_per_trial`` /
        ``procs_per_trial``, fixed or searched) the same call run as that many ranks
        (``autotune.distributed``; rank 0's reports come back here)."""
        if width == 1:
            return fn
        from autotune.distributed import OnRanks
        return OnRanks(fn, width, "nccl" if self.spec.parallel.on_gpus else "gloo")

    def config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """What the objective function sees: trainer settings, then fixed values, then the trial's,
        less a searched trial width (the scheduler's: the ranks see it as their world size)."""
        width_knob = self.spec.parallel.searched_width
        return {**self.spec.trainer_dict, **self.spec.fixed_dict,
                **{k: v for k, v in params.items() if k != width_knob}}

    def __call__(self, trial_id: int, params: Mapping[str, Any], notify: Notify | None = None) -> list[float]:
        """Run the trial; ``last_time_s`` says afterwards where its time went (also when it raised)."""
        started, phases = time.perf_counter(), {}
        try:
            return self._run(trial_id, params, notify, phases)
        finally:
            self.last_time_s = split_time(phases, time.perf_counter() - started)

    def _run(self, trial_id: int, params: Mapping[str, Any], notify: Notify | None,
             phases: dict[str, float]) -> list[float]:
        study = self._load_study()
        self._prestart_helper(study)
        trial = optuna.trial.Trial(study, trial_id)
        metric = self.spec.metrics[0]
        single = len(self.spec.objectives) == 1
        pruned = False
        curve: list[list[Any]] = []
        curve_saved_at = -math.inf   # several objectives: when the growing curve was last stored
        config = self.config(params)
        last_step = _last_step(self.spec.pruner.max_steps, config.get("steps"))
        # Several objectives: Optuna forbids trial.report, so the pruner judges stored curves:
        # one named metric's (median / percentile) or every objective's (pareto).
        pareto = not single and self.spec.pruner.kind == "pareto"
        prune_on = self.spec.pruner.metric if not single and self.spec.pruner.kind != "none" else None
        direction_of = dict(zip(self.spec.metrics, self.spec.directions))
        minimize = prune_on is None or direction_of[prune_on] == "minimize"
        peers: dict[str, Any] = {"read_at": -math.inf, "curves": []}

        def others() -> list:
            if time.monotonic() - peers["read_at"] >= PEER_CURVES_S:
                # pareto also reads running trials' curves (stored as they grow): peers at the rung
                states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) + \
                    ((optuna.trial.TrialState.RUNNING,) if pareto else ())
                peers["curves"] = [t.user_attrs["curve"] if pareto else
                                   _metric_curve(t.user_attrs["curve"], prune_on)
                                   for t in study.get_trials(deepcopy=False, states=states)
                                   if t._trial_id != trial_id and isinstance(t.user_attrs.get("curve"), list)]
                peers["read_at"] = time.monotonic()
            return peers["curves"]

        def should_stop(step: int) -> bool:
            if last_step is not None and step >= last_step:
                return False   # the run is over: stopping it now saves nothing, so it completes
            if pareto:
                return prune_on_front(self.spec.pruner, curve, others(), direction_of)
            return prune_on is not None and prune_on_curves(
                self.spec.pruner, _metric_curve(curve, prune_on), others(), minimize)

        def report(step: int, metrics: Mapping[str, float]) -> bool:
            nonlocal pruned, curve_saved_at
            step = int(step)
            metrics = {k: _jsonable(v) for k, v in metrics.items()}
            if notify is not None:
                notify(step, metrics)
            curve.append([step, {k: v for k, v in metrics.items() if k in self.spec.metrics}])
            if not single and time.monotonic() - curve_saved_at >= CURVE_SAVE_S:
                trial.set_user_attr("curve", curve)   # Optuna forbids trial.report here
                curve_saved_at = time.monotonic()
            value = metrics.get(metric)
            if not single:
                if should_stop(step):
                    pruned = True
                return not pruned
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return not pruned
            trial.report(float(value), step)
            if last_step is not None and step >= last_step:
                return not pruned   # the run is over: stopping it now saves nothing, so it completes
            if trial.should_prune():
                pruned = True
            return not pruned

        width = trial_width(params, self.spec.parallel)
        fn = self._on_ranks(resolve(self.spec.objective, self.spec), width)
        started = time.perf_counter()
        try:
            if self.builtin:
                use_compile_cache(compile_cache_dir(self.storage_url))
                result = fn(config, report, compile_costs=self._compile_costs(study, config),
                            progress=notify)
            else:
                result = fn(config, report)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            phases["objective"] = time.perf_counter() - started
            return self._out_of_memory(study, trial, exc)
        if not isinstance(result, Mapping):
            raise TrialFailed(f"objective {self.spec.objective} returned {type(result).__name__}, "
                              "expected a dict of metrics")
        result = dict(result)
        if isinstance(result.get("time_s"), Mapping):        # the built-in trainer's own split
            phases.update(result.pop("time_s"))
        else:
            phases["objective"] = time.perf_counter() - started
        if isinstance(result.get("compile"), Mapping):
            choice = _jsonable_dict(result.pop("compile"))
            trial.set_user_attr("compile", choice)
        metrics = _jsonable_dict(result)
        metrics.setdefault("trial_seconds", round(time.perf_counter() - started, 3))
        if self.spec.parallel.searched_width is not None:   # OnRanks says it above 1 rank
            metrics.setdefault("world_size", width)
        trial.set_user_attr("metrics", metrics)
        set_constraints(trial, self.spec.constraints, metrics)
        if not single:
            trial.set_user_attr("curve", curve)
        if pruned:
            on = f" (dominated on {', '.join(judged_metrics(curve, direction_of))})" if pareto else ""
            raise optuna.TrialPruned(f"pruned by {self.spec.pruner.kind} at step {curve[-1][0]}{on}")
        values = []
        for name in self.spec.metrics:
            if name not in metrics:
                raise TrialFailed(f"objective {self.spec.objective} did not return metric {name!r} "
                                  f"(it returned {sorted(metrics)})")
            value = metrics[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TrialFailed(f"metric {name!r} is {value!r}, not a finite number")
            values.append(float(value))
        return values
