"""bench/attention_profile.py's own logic on a machine without a GPU (the profile itself needs one)."""
from __future__ import annotations

import pytest
import torch

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def attention_profile():
    return load_bench("attention_profile")


def test_a_chain_feeds_each_layers_output_to_the_next_as_its_queries(attention_profile):
    calls = []

    def layer(q, k, v):
        calls.append(q.clone())
        return q * 2 + k - v

    q, k, v = torch.ones(2), torch.full((2,), 3.0), torch.ones(2)
    out = attention_profile.chain(layer, 3)(q, k, v)
    assert len(calls) == 3 and calls[1].tolist() == [4.0, 4.0] and out.tolist() == [22.0, 22.0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_it_says_so_and_exits_1(attention_profile, capsys):
    assert attention_profile.main(["--lengths", "1024"]) == 1
    assert "needs CUDA" in capsys.readouterr().err
