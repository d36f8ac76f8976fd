"""Warm start: moving knowledge from earlier studies in the study store into a new study.

Public: ``prepare`` (a new study's sampler and what to apply to the study), ``prepare_join`` (the
same sampler in a process that joins the study), ``check`` and ``WarmStartError``; the strategies'
samplers ``PriorSampler`` and ``LocalSearchSampler``. ``_prepare`` finds and reads the sources and
applies a strategy, ``_transfer`` carries parameters into the new space, ``_prior`` and ``_local``
are the ``prior`` and ``local`` strategies' samplers.
Must not know about: the model, the scheduler, YAML.
"""
from autotune.warmstart._local import LocalSearchSampler
from autotune.warmstart._prepare import (
    AUTO,
    PROVENANCE_ATTR,
    SOURCE_ATTR,
    WarmStartError,
    check,
    prepare,
    prepare_join,
)
from autotune.warmstart._prior import PriorSampler

__all__ = ["WarmStartError", "check", "prepare", "prepare_join", "PriorSampler", "LocalSearchSampler", "AUTO",
           "PROVENANCE_ATTR", "SOURCE_ATTR"]
