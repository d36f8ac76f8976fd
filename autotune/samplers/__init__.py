"""Optimizers as Optuna samplers: one factory for all kinds, plus our evolutionary and hybrid ones.

Owns: ``build_sampler(kind, seed=None, **options)`` for every kind in ``SAMPLER_KINDS``
(tpe | gp | cmaes | random | evolution | nsga2 | hybrid) and ``check_sampler_options``, which
validates options without building (errors read ``"<option or 'kind'>: <problem>"``). Every
sampler comes behind the duplicate guard (``_distinct.DistinctSampler``) and honours the
constraint values trials set (``Trial.set_constraint``) where its algorithm can.
Must not know about: the model, the scheduler, YAML files.
"""
from autotune.samplers._factory import (
    SAMPLER_KINDS,
    build_sampler,
    check_sampler_options,
    sampler_defaults,
)

__all__ = ["SAMPLER_KINDS", "build_sampler", "check_sampler_options", "sampler_defaults"]
