"""Compile-cache keys that do not depend on the order modules were imported in (issue 15).

Owns: ``stable_pickling()``, which makes ``torch.memory_format`` values pickle the same way in
every process. Inductor's FX graph cache and AOTAutograd's cache key a graph by pickling what
shapes it, a tensor's memory format among it; a memory format has no ``__module__``, so pickle
names the first module in ``sys.modules`` through which ``torch.contiguous_format`` resolves.
In a process that imported Optuna before torch, that is ``optuna.samplers._gp.sampler`` (its lazy
``torch`` attribute), elsewhere ``torch._utils``: a trial's worker (Optuna first) and the helper
that compiles ahead for it (torch first) then key the same graph differently and every graph the
helper built is missed (seen on a CPU; the same holds on a GPU). Here a memory format pickles as a
call of ``memory_format(name)``, a function of this module, in every process that calls
``stable_pickling()`` before compiling. Must not know about: anything but torch.
"""
from __future__ import annotations

import copyreg

import torch


def memory_format(name: str) -> torch.memory_format:
    """``torch.<name>``, e.g. ``memory_format("contiguous_format")`` (what a pickled one becomes)."""
    value = getattr(torch, name)
    if not isinstance(value, torch.memory_format):
        raise ValueError(f"torch.{name} is not a memory format")
    return value


def _reduce(value: torch.memory_format) -> tuple:
    return memory_format, (str(value).rsplit(".", 1)[-1],)


def stable_pickling() -> None:
    """Pickle ``torch.memory_format`` values by name, whatever was imported first (idempotent)."""
    copyreg.pickle(torch.memory_format, _reduce)
