"""bench/model_speed.py's argument handling on a machine without a GPU (the benchmark itself needs one)."""
from __future__ import annotations


import pytest

from tests.bench_scripts import load_bench


@pytest.fixture(scope="module")
def model_speed():
    return load_bench("model_speed")


def test_attention_runs_32k_and_64k_as_one_sequence_a_batch(model_speed):
    shapes = model_speed.attention_shapes([1024, 16384, 32768, 65536], tokens=32768)
    assert shapes == [(1024, 32), (16384, 2), (32768, 1), (65536, 1)]


def test_plan_prints_every_length_without_a_gpu(model_speed, capsys):
    assert model_speed.main(["--only", "attention", "--lengths", "32768", "65536", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "32768 tokens x batch 1" in out and "65536 tokens x batch 1" in out


@pytest.mark.parametrize("argv", [["--lengths", "0"], ["--tokens", "-5"], ["--lengths", "64k"]])
def test_bad_lengths_or_tokens_are_refused_by_the_argument_parser(model_speed, argv):
    with pytest.raises(SystemExit) as exit_info:
        model_speed.main([*argv, "--plan"])
    assert exit_info.value.code == 2


def test_an_unknown_train_config_is_refused_before_any_gpu_work(model_speed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        model_speed.main(["--only", "train", "--train-configs", "sparse", "sparse_cuda_graphs"])
    assert exit_info.value.code == 2
    assert "sparse_cuda_graphs" in capsys.readouterr().err


def test_every_train_config_names_a_model_config_and_known_pins(model_speed):
    from autotune.model import ModelConfig
    from autotune.model.moe import MoE

    known = {"flex_backend", "compile_mode", "inductor", "adaptive_layout", "swiglu_kernel"}
    configs = model_speed.train_configs()
    assert {"sparse", "dense", "sparse_flash", "sparse_cg", "sparse_cdt"} <= set(configs)
    for name, (title, cfg, *pins) in configs.items():
        assert isinstance(title, str) and isinstance(cfg, ModelConfig), name
        for key in (pins[0] if pins else {}):
            assert key in known, (name, key)
    # the module attributes those pins set exist (bench_train sets them on every module that has them)
    moe = MoE(d_model=8, d_ff=16, num_experts=2, top_k=1)
    assert hasattr(moe, "adaptive_layout") and hasattr(moe.experts, "swiglu_kernel")
