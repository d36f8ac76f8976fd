"""Typed, frozen study specification: what ``autotune/spec.py`` produces from YAML.

Owns: the dataclasses every other module reads (never raw dicts). Validation lives in spec.py.
Must not know about: Optuna internals, torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OPTIMIZER_KINDS = ("tpe", "gp", "cmaes", "random", "evolution", "nsga2", "hybrid")
PRUNER_KINDS = ("none", "median", "percentile", "sha", "hyperband", "pareto")
WARM_START_STRATEGIES = ("enqueue", "prior", "local")


@dataclass(frozen=True)
class Param:
    """One search-space parameter.

    ``when`` maps another parameter's name to the values for which this one is active,
    e.g. ``{"attention": ("sparse",)}``; inactive parameters are not suggested at all.
    """

    name: str
    type: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: str
    direction: Literal["minimize", "maximize"]


@dataclass(frozen=True)
class ConstraintSpec:
    """``metric op bound`` that a trial must satisfy, e.g. ``peak_mem_mb <= 40000``."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str = "tpe"
    seed: int | None = None
    options: tuple[tuple[str, Any], ...] = ()   # kind-specific, passed to build_sampler(**options)

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = "none"
    min_steps: int = 0                  # steps before any pruning (warm-up / min_resource)
    max_steps: int | None = None        # hyperband max_resource; default: trainer steps
    reduction_factor: int = 3           # sha / hyperband
    percentile: float = 50.0            # percentile pruner
    startup_trials: int = 5             # median / percentile: trials before pruning starts
    interval_steps: int = 1
    metric: str | None = None           # several objectives: median / percentile on this one's curve
    dominated_by: float = 0.25          # pareto: prune when at least this share of the peers at the
                                        # step dominate the trial on every judged objective


@dataclass(frozen=True)
class BudgetSpec:
    trials: int | None = None           # finished (COMPLETE + PRUNED) trials the study ends with
    timeout_s: float | None = None      # wall time of this run
    gpu_hours: float | None = None      # trials' wall time x their slot's share of its GPU
    trial_timeout_s: float | None = None   # one trial's wall time; None: learnt from the study


@dataclass(frozen=True)
class ParallelSpec:
    gpus: Literal["auto"] | tuple[int, ...] | int = "auto"
    trials_per_gpu: int = 1
    workers: int | None = None          # CPU workers when there is no GPU (default 1)
    evals: int | None = None            # the flat form's parallel_evals: concurrent trials on GPUs
                                        # too (trials_per_gpu = ceil(evals / GPUs)); not a YAML key
    fit_cores: bool = False             # CPU: no more workers than cores (study files: true)
    max_retries: int = 2                # retries of a trial whose worker died
    heartbeat_interval: int = 10        # seconds
    grace_period: int = 60              # seconds without a heartbeat before a trial is failed
    gpus_per_trial: int = 1             # ranks of one trial, one GPU each (NCCL); issue 21
    procs_per_trial: int = 1            # ranks of one trial on the CPU (gloo), GPUs hidden
    mps: bool = False                   # the trials of a GPU run through a private CUDA MPS daemon
    searched_width: str | None = None   # "gpus_per_trial" / "procs_per_trial" when the space
                                        # searches it (not a YAML key: set from the space)
    widest: int = 1                     # the largest width the space may draw
    width_key: str = ""                 # where the study file searches it, for errors

    @property
    def ranks_per_trial(self) -> int:
        """Processes one trial runs as (1: the worker runs it itself)."""
        return max(self.gpus_per_trial, self.procs_per_trial)

    @property
    def on_gpus(self) -> bool:
        """Whether a trial's ranks run on GPUs (NCCL): ``gpus_per_trial`` set or searched."""
        return self.gpus_per_trial > 1 or self.searched_width == "gpus_per_trial"


@dataclass(frozen=True)
class WarmStartSpec:
    sources: tuple[str, ...] = ()       # study names, or ("auto",)
    storage: str | None = None          # where the sources live; default the study's storage
    strategy: str = "enqueue"
    best_k: int = 5                     # enqueue: the best k configurations of each source
    out_of_range: Literal["clip", "drop"] = "clip"
    local_trials: int = 15              # local: trials of the local search before the prior alone


@dataclass(frozen=True)
class StudySpec:
    path: Path | None
    study: str
    storage: str
    space: SearchSpace
    objectives: tuple[ObjectiveSpec, ...]
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    warm_start: WarmStartSpec | None = None
    objective: str = "builtin:moe_lm"
    trainer: tuple[tuple[str, Any], ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()
    constraints: tuple[ConstraintSpec, ...] = ()
    # a flat study's model / trainer settings that came from the machine-sized defaults
    # (autotune/knobs.py), already merged into trainer and fixed; "cpu" or "gpu": which set
    flat_defaults: tuple[tuple[str, Any], ...] = ()
    flat_defaults_for: str | None = None

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def trainer_dict(self) -> dict[str, Any]:
        return dict(self.trainer)

    @property
    def fixed_dict(self) -> dict[str, Any]:
        return dict(self.fixed)
