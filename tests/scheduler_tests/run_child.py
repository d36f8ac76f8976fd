"""``python -m scheduler_tests.run_child URL STUDY SETTINGS_JSON``: one scheduler process, as
``autotune run`` / ``autotune worker`` would start it; prints its RunResult as JSON."""
from __future__ import annotations

import dataclasses
import json
import sys
import warnings

import optuna

from autotune import scheduler, store
from autotune.spec_types import BudgetSpec, ParallelSpec
from scheduler_tests import objectives


def main() -> None:
    url, name, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    sampler = None
    if "fixed_x" in settings:  # every fresh trial gets this x
        sampler = optuna.samplers.PartialFixedSampler({"x": settings["fixed_x"]},
                                                      optuna.samplers.RandomSampler())
    study = store.create_or_load_study(store.open_storage(url), name, ["minimize"], sampler=sampler,
                                       pruner=optuna.pruners.NopPruner())
    kind = settings.get("objective", "quadratic")
    if kind == "quadratic":
        objective = objectives.Quadratic(url, name, steps=settings.get("steps", 3),
                                         sleep_s=settings.get("sleep_s", 0.01),
                                         gate=settings.get("gate", ""))
        suggest = objectives.suggest_x
    else:
        objective, suggest = objectives.Behaves(url, name), objectives.suggest_kind
    result = scheduler.run_study(
        study, storage_url=url, suggest=suggest, objective=objective,
        parallel=ParallelSpec(gpus=0, workers=settings.get("workers", 2),
                              heartbeat_interval=1, grace_period=settings.get("grace", 3)),
        budget=BudgetSpec(trials=settings.get("trials"), timeout_s=settings.get("timeout_s")))
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main()
