"""Shared fixtures for the data and training tests: a tiny model config and small token files."""
from __future__ import annotations

import numpy as np
import pytest

from autotune.model import ModelConfig


@pytest.fixture
def tiny_model() -> ModelConfig:
    """A model small enough that a few training steps take well under a second on a CPU."""
    return ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, num_experts=4, top_k=2,
                       window=16, block_size=8, keep_ratio=0.5)


@pytest.fixture
def lines_txt(tmp_path):
    """A .txt file of 60 lines of varied length (3 to 60 bytes with the newline)."""
    rng = np.random.default_rng(0)
    lines = ["".join(rng.choice(list("abcdefgh "), size=int(n))) for n in rng.integers(2, 60, size=60)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tokens_bin(tmp_path):
    """A .bin file of 5,000 uint16 tokens below 1,000, with token 999 ending documents now and then."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 999, size=5000).astype("<u2")
    tokens[rng.choice(5000, size=40, replace=False)] = 999
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    return path, tokens
