"""bench/attention_options.py's own logic on a machine without a GPU (the timings need one)."""
from __future__ import annotations

import pytest
import torch

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def options():
    return load_bench("attention_options")


def test_speeds_are_relative_to_the_same_lengths_default_and_dense_and_a_failure_is_a_row(options):
    rows = options.relative([
        {"tokens": 1024, "variant": "default", "ms": 2.0, "dense_ms": 1.0},
        {"tokens": 1024, "variant": "tma", "ms": 1.0, "dense_ms": 1.0},
        {"tokens": 16384, "variant": "default", "ms": 4.0, "dense_ms": 12.0},
        {"tokens": 16384, "variant": "tma", "error": "KeyError: 'USE_TMA'", "dense_ms": 12.0},
    ])
    assert (rows[1]["x_default"], rows[1]["x_dense"]) == (2.0, 1.0)
    assert (rows[2]["x_default"], rows[2]["x_dense"]) == (1.0, 3.0)
    text = options.table(rows)
    assert "| 1024 | tma | 1.000 | 2.000 | 1.000 | - |" in text
    assert "| 16384 | tma | failed: KeyError: 'USE_TMA' |" in text


def test_every_variant_names_options_torch_documents(options, capsys):
    from torch.nn.attention.flex_attention import FlexKernelOptions
    known = set(FlexKernelOptions.__annotations__)
    for name, (kernel_options, _) in options.VARIANTS.items():
        for key in kernel_options:
            bare = key.removeprefix("fwd_").removeprefix("bwd_")
            assert bare in known, (name, key)
    assert options.main(["--list"]) == 0 and "default: kernel_options {}" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_it_says_so_and_exits_1(options, capsys):
    assert options.main(["--lengths", "1024"]) == 1
    assert "needs CUDA" in capsys.readouterr().err


def test_the_shipped_long_sequence_tiles_are_the_measured_variant(options):
    from autotune.model.attention import LONG_BWD_TILES
    assert options.VARIANTS["bwd 32/128 s3 w4"] == (LONG_BWD_TILES, {})
