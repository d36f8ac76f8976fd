"""The model each trial trains: a decoder-only MoE transformer with dynamic sparse attention.

Public: ``ModelConfig`` (every knob), ``Transformer`` (``forward(tokens) -> (logits, ModelAux)``),
``ModelAux``. The parts live in ``attention.py``, ``moe.py`` and ``transformer.py``.
"""
from autotune.model.config import ModelConfig
from autotune.model.transformer import ModelAux, Transformer

__all__ = ["ModelConfig", "ModelAux", "Transformer"]
