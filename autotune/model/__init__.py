"""The model each trial trains: a decoder-only MoE transformer with dynamic sparse attention.

Public: ``ModelConfig`` (every knob), ``Transformer`` (``forward(tokens) -> (logits, ModelAux)``),
``ModelAux``. The parts live in ``attention.py``, ``moe.py`` and ``transformer.py``; those (and torch)
are imported on first use, so that ``autotune.model.config`` serves the study-file checks without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.model.config import ModelConfig

if TYPE_CHECKING:
    from autotune.model.transformer import ModelAux, Transformer

__all__ = ["ModelConfig", "ModelAux", "Transformer"]


def __getattr__(name: str) -> Any:
    if name in ("ModelAux", "Transformer"):
        from autotune.model import transformer
        return getattr(transformer, name)
    raise AttributeError(f"module 'autotune.model' has no attribute {name!r}")
