"""Compiling the blocks on a side thread while the trial trains eager (issue 15): the graphs it
builds serve the real blocks (no new graph after the switch, for training nor for the latency pass),
the model it copies is left alone, and ``train`` switches to them mid-run with its time accounted.
On CPU with the ``aot_eager`` backend: Dynamo and AOTAutograd for real (forward and backward
graphs), Inductor's C++ build skipped."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch._dynamo.utils import counters

import autotune.train
from autotune.compile_ahead import CompileAhead
from autotune.model import ModelConfig, Transformer
from autotune.train import CompileCosts, TrainConfig, compile_choice, train

# dense attention and a dense FFN: on a CPU the MoE's per-expert loop breaks the graph by design
PLAIN = ModelConfig(vocab_size=32, d_model=32, n_heads=2, d_ff=64, n_layers=3, num_experts=1, top_k=1,
                    attention="dense", max_seq_len=16)
QUICK = TrainConfig(seq_len=16, num_pairs=2, task_vocab=32, batch_size=4, steps=60, eval_every=20,
                    eval_batches=1, threads=1)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _step(model, opt, tokens):
    logits, aux = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()) + aux.aux_loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_graphs_built_on_the_side_thread_serve_the_real_blocks_while_training_goes_on():
    torch.manual_seed(0)
    model = Transformer(PLAIN)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, 32, (4, 16))
    ahead = CompileAhead(model.blocks, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
                         backend="aot_eager")
    ahead.capture()

    def latency_forward():
        model.eval()
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(torch.randint(0, 32, (1, 16)))
        finally:
            model.train()

    ahead.capture_eval(latency_forward)
    assert model.training and ahead.eval_inputs[0][0][0].shape == (1, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _step(model, opt, tokens)
    assert ahead.captured
    before = [p.detach().clone() for p in model.parameters()]
    ahead.start()
    steps = 0
    while not ahead.done:                               # the trial trains on meanwhile
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _step(model, opt, tokens)
        steps += 1
    ahead.join()
    assert ahead.error is None and ahead.seconds > 0
    assert _graphs() >= 2                                # training and latency graphs, built over there
    # the thread trained nothing: the parameters moved only by this thread's steps, no stray grads
    assert all(p.grad is None for p in model.parameters())
    if steps == 0:
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    built = _graphs()
    for block in model.blocks:
        block.compile(backend="aot_eager", dynamic=False)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _step(model, opt, tokens)
    latency_forward()                                   # the whole eval pass this time
    assert _graphs() == built, "the real blocks compiled a graph of their own"


def test_a_failed_compile_is_recorded_and_training_goes_on_eager():
    model = Transformer(PLAIN)
    ahead = CompileAhead(model.blocks, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
                         backend="no-such-backend")
    ahead.capture()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _step(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randint(0, 32, (2, 16)))
    ahead.start()
    ahead.join()
    assert ahead.done and ahead.error is not None and not ahead.inputs


def test_compile_auto_counts_the_steps_that_still_run_eager_while_compiling_ahead():
    costs = CompileCosts(speedup=2.0, compile_s=5.0, ahead_s=40.0, trials=2)
    # (1,000 x 0.1 s - 40 s) x (1 - 1/2) = 30 s saved > 5 s
    go, reason = compile_choice("auto", 1000, 0.1, costs, ahead=True)
    assert go and "40.0 s compiling ahead" in reason and "30.0 s saved > 5.0 s" in reason
    assert not compile_choice("auto", 450, 0.1, costs, ahead=True)[0]     # 2.5 s saved
    assert compile_choice("auto", 450, 0.1, costs)[0]                     # 22.5 s in the foreground


def test_train_switches_to_the_blocks_compiled_ahead_and_accounts_for_it(monkeypatch):
    monkeypatch.setattr(autotune.train, "auto_compiles", lambda device: True)   # CUDA's rule, on a CPU
    monkeypatch.setattr(autotune.train, "COMPILE_BACKEND", "aot_eager")
    reports = []
    m = train(PLAIN, QUICK, lambda step, metrics: reports.append(step) or True,
              compile_costs=CompileCosts(speedup=10.0, compile_s=0.0, ahead_s=0.0, trials=1))
    choice = m["compile"]
    assert choice["ahead"] is True and choice["ahead_s"] > 0, choice
    assert reports == [20, 40, 60] and math.isfinite(m["val_loss"]) and m["steps"] == 60
    parts = m["time_s"]
    assert sum(parts.values()) == pytest.approx(m["train_s"], abs=1e-3)
    assert all(v >= 0 for v in parts.values())
    if choice["compiled"]:                 # the thread finished within the 60 steps (it may not, loaded)
        assert choice["compiled_step_ms"] > 0 and choice["compile_s"] >= 0
        assert "ended before" not in choice["reason"]
    else:
        assert "the run ended before the compile did" in choice["reason"]
    assert parts["compile"] >= 0
