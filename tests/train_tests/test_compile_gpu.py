"""Compiled graphs on a GPU: one worker trains many sparse trials without recompiling in evaluation or
latency, without reaching Dynamo's recompile limit, and without FlexAttention's unfused fallback."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import autotune.train
from autotune.model import ModelConfig
from autotune.train import TrainConfig, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TASK = dict(task="mqar", seq_len=1024, num_pairs=16, task_vocab=64, batch_size=8, eval_every=6,
            precision="bf16")
MODEL = dict(d_model=128, n_layers=2, n_heads=4, d_ff=256, num_experts=4, top_k=2, attention="sparse",
             window=128, block_size=128)


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture
def graphs_built_in(monkeypatch):
    """Dynamo graphs built inside ``evaluate`` and inside ``measure_latency_ms``, over all trials."""
    built = {"evaluate": 0, "measure_latency_ms": 0}

    def counting(name):
        original = getattr(autotune.train, name)

        def wrapper(*args, **kwargs):
            before = _graphs()
            try:
                return original(*args, **kwargs)
            finally:
                built[name] += _graphs() - before
        monkeypatch.setattr(autotune.train, name, wrapper)

    for name in built:
        counting(name)
    return built


@pytest.mark.parametrize("compile_mode", [False, True])
def test_ten_sparse_trials_in_one_worker_never_recompile_evaluating_nor_fall_back(compile_mode, graphs_built_in):
    keep_ratios = [0.15, 0.2, 0.27, 0.33, 0.4, 0.45, 0.5, 0.6, 0.7, 0.75]
    trials = keep_ratios if compile_mode is False else keep_ratios[:3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for keep in trials:
            m = train(ModelConfig(**MODEL, keep_ratio=keep), TrainConfig(**TASK, steps=12, compile=compile_mode))
            assert m["compile"]["compiled"] is compile_mode
            assert 0 < m["keep_ratio_used"] < 1
    # evaluation reuses the training graphs; only latency's batch-1 inference graph is new (once a trial)
    assert graphs_built_in["evaluate"] == 0, graphs_built_in
    per_trial = 1 if compile_mode is False else MODEL["n_layers"] + 1
    assert graphs_built_in["measure_latency_ms"] <= len(trials) * per_trial, graphs_built_in
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "recompile" in t.lower() or "materializ" in t.lower()], texts
    assert not [t for t in texts if "lru_cache" in t or "TensorFloat32" in t], texts


def test_time_split_of_a_gpu_trial_sums_to_its_wall_time():
    m = train(ModelConfig(**MODEL, keep_ratio=0.3), TrainConfig(**TASK, steps=24, compile=False))
    parts = m["time_s"]
    assert parts["compile"] > 0 and parts["train"] > 0 and parts["latency"] < 1.0
    assert m["train_s"] * 0.95 <= sum(parts.values()) <= m["train_s"] * 1.01


def test_eager_trials_reuse_flexattention_graphs_and_reset_before_the_recompile_limit():
    from autotune.model.attention import compiled_graph_count

    train(ModelConfig(**MODEL, keep_ratio=0.3), TrainConfig(**TASK, steps=12, compile=False))
    before = _graphs()
    m = train(ModelConfig(**MODEL, keep_ratio=0.6), TrainConfig(**TASK, steps=12, compile=False))
    assert _graphs() == before, "a trial of the same shapes and window compiled FlexAttention again"
    assert m["time_s"]["compile"] < 0.5, m["time_s"]
    for window in (128, 256, 384):              # 3 windows x 3 batch sizes: more graphs than the limit
        for batch_size in (4, 8, 16):
            train(ModelConfig(**{**MODEL, "window": window}, keep_ratio=0.3),
                  TrainConfig(**{**TASK, "batch_size": batch_size}, steps=8, compile=False))
            assert compiled_graph_count() <= torch._dynamo.config.recompile_limit


def test_sparse_attention_on_variable_length_text_stays_under_the_recompile_limit(tmp_path):
    import numpy as np
    from autotune.model.attention import compiled_graph_count

    rng = np.random.default_rng(0)                  # documents of 100-2,000 bytes: many batch shapes
    lines = ["".join(rng.choice(list("abcdefgh "), size=int(n))) for n in rng.integers(100, 2000, size=300)]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig(task="text", data_path=str(path), eot_token=10, seq_len=1024, tokens_per_batch=8192,
                      steps=40, eval_every=20, precision="bf16", compile=False)
    m = train(ModelConfig(**MODEL, keep_ratio=0.3), cfg)
    assert math.isfinite(m["val_loss"])
    assert compiled_graph_count() <= torch._dynamo.config.recompile_limit


def test_sparse_trial_compiled_ahead_loads_its_graphs_from_the_helper(monkeypatch, tmp_path):
    """``compile: auto`` compiles the blocks in a helper process while the trial trains eager; after
    the switch, training steps, evaluations and the latency pass load the helper's graphs from the
    caches and compile none of their own. (The test waits for the helper at its start, so that the
    switch comes within the run whatever the load.)"""
    from torch._dynamo.utils import counters

    from autotune.compile_ahead import CompileAhead
    from autotune.compile_policy import CompileCosts
    from autotune.train import _Trainer

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    start, compile_blocks = CompileAhead.start, _Trainer.compile
    at_switch = {}

    def start_and_wait(self):
        start(self)
        self.wait()

    def compile_and_count(self):
        at_switch.update(miss=counters["inductor"]["fxgraph_cache_miss"],
                         hit=counters["aot_autograd"]["autograd_cache_hit"] + counters["inductor"]["fxgraph_cache_hit"])
        compile_blocks(self)
    monkeypatch.setattr(CompileAhead, "start", start_and_wait)
    monkeypatch.setattr(_Trainer, "compile", compile_and_count)
    costs = CompileCosts(speedup=10.0, compile_s=0.0, ahead_s=0.0, ahead_compile_s=0.0, trials=1)     # always worth it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = train(ModelConfig(**MODEL, keep_ratio=0.3), TrainConfig(**{**TASK, "eval_every": 50}, steps=200),
                  compile_costs=costs)
    choice = m["compile"]
    assert choice["ahead"] is True and choice["compiled"] and choice["ahead_s"] > 0, choice
    assert counters["inductor"]["fxgraph_cache_miss"] == at_switch["miss"], "compiled here after the switch"
    # training and latency graphs loaded: from AOTAutograd's cache, or (where it passes a graph by)
    # from Inductor's FX graph cache, forward and backward apart
    loaded = counters["aot_autograd"]["autograd_cache_hit"] + counters["inductor"]["fxgraph_cache_hit"]
    assert loaded >= at_switch["hit"] + 2, (dict(counters["aot_autograd"]), dict(counters["inductor"]))
    # loading, not compiling (``compile_s`` also holds the eager steps' wait for the helper here)
    assert choice["load_s"] < 10 and choice["compile_s"] >= choice["load_s"], choice
    assert m["time_s"]["train"] > 0 and sum(m["time_s"].values()) == pytest.approx(m["train_s"], rel=0.01)
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "recompile" in t.lower() or "materializ" in t.lower()], texts
