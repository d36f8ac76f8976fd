"""Each model test starts as a fresh process would: no compiled graphs left by earlier tests (one
test process compiles more shapes than a worker ever does) and full fp32 matmuls (the trainer sets
TF32 on CUDA; a reference comparison must not inherit it)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_compiler_state():
    precision = torch.get_float32_matmul_precision()
    torch._dynamo.reset()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(precision)
