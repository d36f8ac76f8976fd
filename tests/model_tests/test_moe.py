"""MoE: dispatch against a per-token loop, the balance loss, and gradients to the router."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autotune.model.moe import Experts, MoE, balance_loss


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: sum over its chosen experts of weight * expert(token), + shared expert."""
    flat = x.reshape(-1, x.shape[-1])
    routing = moe.router(flat)
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for slot in range(routing.experts.shape[1]):
            e = int(routing.experts[t, slot])
            gate, up = (moe.experts.w_in[e] @ flat[t]).chunk(2)
            out[t] += routing.weights[t, slot] * (moe.experts.w_out[e] @ (F.silu(gate) * up))
        if moe.shared is not None:
            out[t] += moe.shared(flat[t])
    return out.view_as(x)


@pytest.mark.parametrize("num_experts,top_k,router,shared", [
    (4, 1, "softmax", False), (4, 2, "softmax", True), (8, 3, "sigmoid", False), (6, 4, "softmax", False),
])
@pytest.mark.parametrize("impl", ["loop", "grouped"])
def test_dispatch_equals_a_per_token_loop(num_experts, top_k, router, shared, impl):
    if impl == "grouped" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm missing")
    torch.manual_seed(num_experts * 10 + top_k)
    moe = MoE(d_model=16, d_ff=24, num_experts=num_experts, top_k=top_k, router=router, shared_expert=shared)
    moe.impl = impl
    x = torch.randn(3, 11, 16)
    out, routing = moe(x)
    with torch.no_grad():
        ref = naive_moe(moe, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert routing.load.sum().item() == pytest.approx(1.0)


def test_balance_loss_matches_its_formula():
    torch.manual_seed(0)
    moe = MoE(d_model=8, d_ff=8, num_experts=5, top_k=2)
    x = torch.randn(40, 8)
    routing = moe.router(x)
    probs = moe.router.proj(x).softmax(-1)
    f = torch.stack([(routing.experts == e).sum() for e in range(5)]).float() / (40 * 2)
    expected = 5 * sum(f[e] * probs[:, e].mean() for e in range(5))
    assert routing.balance_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_balance_loss_is_minimal_at_uniform_load():
    E = 8
    uniform = torch.full((E,), 1 / E)
    assert balance_loss(uniform, uniform).item() == pytest.approx(1.0)
    for _ in range(20):
        p = torch.rand(E).softmax(0) if _ % 2 else torch.distributions.Dirichlet(torch.ones(E) * 0.3).sample()
        assert balance_loss(p, p).item() >= 1.0 - 1e-6          # load that follows the router: >= uniform


@pytest.mark.parametrize("top_k,router", [(1, "softmax"), (2, "softmax"), (1, "sigmoid"), (2, "sigmoid")])
def test_gradients_reach_the_router_from_the_output_and_the_balance_loss(top_k, router):
    torch.manual_seed(1)
    moe = MoE(d_model=16, d_ff=16, num_experts=4, top_k=top_k, router=router)
    x = torch.randn(2, 9, 16)
    out, routing = moe(x)
    (grad_out,) = torch.autograd.grad(out.square().sum(), moe.router.proj.weight, retain_graph=True)
    (grad_aux,) = torch.autograd.grad(routing.balance_loss, moe.router.proj.weight)
    assert grad_out.abs().sum() > 0 and grad_aux.abs().sum() > 0


def test_every_expert_weight_gets_a_gradient_when_used():
    torch.manual_seed(2)
    moe = MoE(d_model=16, d_ff=16, num_experts=4, top_k=2)
    out, routing = moe(torch.randn(4, 16, 16))
    out.sum().backward()
    used = routing.load > 0
    per_expert = moe.experts.w_in.grad.abs().sum((1, 2))
    assert ((per_expert > 0) == used).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("num_experts", [8, 32])
def test_grouped_dispatch_on_cuda_matches_the_expert_loop_in_bf16(num_experts):
    moe = MoE(d_model=256, d_ff=512, num_experts=num_experts, top_k=2).cuda()
    x = torch.randn(4, 512, 256, device="cuda", requires_grad=True)
    results = []
    for impl in ("grouped", "loop"):
        moe.impl = impl
        moe.zero_grad()
        with torch.autocast("cuda", torch.bfloat16):
            out, _ = moe(x)
        (gx,) = torch.autograd.grad(out.float().square().sum(), x)
        results.append((out.float(), gx, None))
    (a, ga, _), (b, gb, _) = results
    assert ((a - b).norm() / b.norm()).item() < 1e-2
    assert ((ga - gb).norm() / gb.norm()).item() < 2e-2


@pytest.mark.parametrize("top_k", [1, 3])
def test_dispatch_gradients_equal_the_per_token_loop(top_k):
    torch.manual_seed(3)
    moe = MoE(d_model=8, d_ff=8, num_experts=5, top_k=top_k, shared_expert=True)
    x = torch.randn(2, 7, 8, requires_grad=True)
    params = [x, moe.router.proj.weight, moe.experts.w_in, moe.experts.w_out]
    grad_out = torch.randn(2, 7, 8)
    fast = torch.autograd.grad(moe(x)[0], params, grad_out)
    slow = torch.autograd.grad(naive_moe(moe, x), params, grad_out)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_small_top_k_equals_torch_topk(k):
    from autotune.model.moe import top_k
    scores = torch.randn(100, 8, requires_grad=True)
    values, indices = top_k(scores, k)
    ref_values, ref_indices = scores.topk(k, dim=-1)
    assert indices.equal(ref_indices) and values.equal(ref_values)
    (grad,) = torch.autograd.grad(values.sum(), scores)
    (ref_grad,) = torch.autograd.grad(ref_values.sum(), scores)
    assert grad.equal(ref_grad)


# ------------------------------------------------------------------------------- adaptive top-k
def reference_routing(moe: MoE, x: torch.Tensor, threshold: float):
    """One token at a time: its experts by score, best first, taken until their probabilities sum to
    at least ``threshold`` or ``top_k`` are taken; weights the taken scores, renormalised when top_k > 1.
    -> [(experts, weights)] per token."""
    logits = moe.router.proj(x).float()
    routes = []
    for row in logits:
        gate = row.softmax(-1) if moe.router.kind == "softmax" else row.sigmoid()
        probs = gate / gate.sum()
        experts, total = [], 0.0
        for e in gate.argsort(descending=True).tolist()[: moe.router.top_k]:
            if experts and total >= threshold:
                break
            experts.append(e)
            total += float(probs[e].detach())
        weights = gate[experts]
        if moe.router.top_k > 1:
            weights = weights / weights.sum()
        routes.append((experts, weights))
    return routes


def reference_moe(moe: MoE, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """The per-token loop over the reference router's experts (+ shared expert)."""
    flat = x.reshape(-1, x.shape[-1])
    rows = []
    for token, (experts, weights) in zip(flat, reference_routing(moe, flat, threshold)):
        out = torch.zeros_like(token)
        for e, w in zip(experts, weights):
            gate, up = (moe.experts.w_in[e] @ token).chunk(2)
            out = out + w * (moe.experts.w_out[e] @ (F.silu(gate) * up))
        rows.append(out + (moe.shared(token) if moe.shared is not None else 0))
    return torch.stack(rows).view_as(x)


ADAPTIVE = [(4, 2, "softmax", False, 0.5), (8, 4, "softmax", True, 0.7), (8, 3, "sigmoid", False, 0.6),
            (6, 4, "softmax", False, 0.95), (4, 1, "softmax", False, 0.5)]


@pytest.mark.parametrize("num_experts,top_k,router,shared,threshold", ADAPTIVE)
def test_adaptive_router_chooses_the_reference_routers_experts_and_weights(num_experts, top_k, router, shared,
                                                                           threshold):
    torch.manual_seed(num_experts + top_k)
    moe = MoE(d_model=16, d_ff=16, num_experts=num_experts, top_k=top_k, router=router,
              router_threshold=threshold)
    x = torch.randn(60, 16)
    with torch.no_grad():
        routing = moe.router(x)
        reference = reference_routing(moe, x, threshold)
    for t, (experts, weights) in enumerate(reference):
        n = len(experts)
        assert routing.used[t].tolist() == [True] * n + [False] * (top_k - n)
        assert routing.experts[t, :n].tolist() == experts
        torch.testing.assert_close(routing.weights[t, :n], weights)
        assert (routing.weights[t, n:] == 0).all()
    used = [len(e) for e, _ in reference]
    assert routing.experts_per_token.item() == pytest.approx(sum(used) / len(used))
    counts = torch.zeros(num_experts, dtype=torch.long)
    for experts, _ in reference:
        counts[experts] += 1
    assert routing.counts.equal(counts)
    torch.testing.assert_close(routing.load, counts.float() / counts.sum())
    probs = moe.router.proj(x).float().softmax(-1) if router == "softmax" else None
    if probs is not None:                       # the balance loss over the used assignments
        expected = num_experts * (counts.float() / counts.sum() * probs.mean(0)).sum()
        assert routing.balance_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_threshold_spans_one_expert_to_top_k():
    torch.manual_seed(0)
    x = torch.randn(200, 16)
    per_token = []
    for threshold in (1e-6, 0.3, 0.6, 0.9, 0.999999):
        moe = MoE(d_model=16, d_ff=16, num_experts=8, top_k=4, router_threshold=threshold)
        moe.router.proj.weight.data.copy_(0.1 * torch.randn(8, 16, generator=torch.Generator().manual_seed(1)))
        per_token.append(moe.router(x).experts_per_token.item())
    assert per_token[0] == 1.0 and per_token[-1] == 4.0
    assert per_token == sorted(per_token)


@pytest.mark.parametrize("num_experts,top_k,router,shared,threshold", ADAPTIVE)
@pytest.mark.parametrize("impl", ["loop", "grouped"])
@pytest.mark.parametrize("layout", ["static", "compact"])
def test_adaptive_dispatch_equals_the_reference_per_token_loop(num_experts, top_k, router, shared, threshold,
                                                               impl, layout, monkeypatch):
    if impl == "grouped" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm missing")
    if impl == "grouped":          # never falls back to one matmul per expert
        monkeypatch.setattr(Experts, "forward_loop", lambda *a: pytest.fail("per-expert loop"))
    torch.manual_seed(num_experts * 10 + top_k)
    moe = MoE(d_model=16, d_ff=24, num_experts=num_experts, top_k=top_k, router=router, shared_expert=shared,
              router_threshold=threshold)
    moe.impl, moe.adaptive_layout = impl, layout
    x = torch.randn(3, 11, 16)
    out, routing = moe(x)
    with torch.no_grad():
        ref = reference_moe(moe, x, threshold)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert routing.load.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("impl", ["loop", "grouped"])
@pytest.mark.parametrize("layout", ["static", "compact"])
def test_adaptive_dispatch_gradients_equal_the_reference_loop(impl, layout):
    if impl == "grouped" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm missing")
    torch.manual_seed(4)
    moe = MoE(d_model=16, d_ff=16, num_experts=6, top_k=4, shared_expert=True, router_threshold=0.6)
    moe.impl, moe.adaptive_layout = impl, layout
    x = torch.randn(2, 9, 16, requires_grad=True)
    params = [x, moe.router.proj.weight, moe.experts.w_in, moe.experts.w_out]
    grad_out = torch.randn(2, 9, 16)
    out, routing = moe(x)
    assert 1 < routing.experts_per_token.item() < 4
    fast = torch.autograd.grad(out, params, grad_out)
    slow = torch.autograd.grad(reference_moe(moe, x, 0.6), params, grad_out)
    for a, b in zip(fast, slow):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["static", "compact"])
def test_adaptive_experts_run_only_the_used_assignments(monkeypatch, layout):
    """The experts run the n used (token, expert) rows: ``compact`` hands them those rows only (the
    plain SwiGLU), ``static`` the [N * top_k] layout, the experts' counts (on the device) where they end."""
    seen = []
    forward = Experts.forward
    monkeypatch.setattr(Experts, "forward", lambda self, x, counts, impl="auto": (
        seen.append((x.shape[0], int(counts.sum()))), forward(self, x, counts, impl))[1])
    torch.manual_seed(6)
    moe = MoE(d_model=16, d_ff=16, num_experts=8, top_k=4, router_threshold=0.5)
    moe.adaptive_layout = layout
    with torch.no_grad():
        moe.router.proj.weight.mul_(5.0)
    _, routing = moe(torch.randn(3, 20, 16))
    x_rows, counted = seen[0]
    used = int(routing.used.sum())
    assert counted == used and 60 < used < 60 * 4
    assert x_rows == (60 * 4 if layout == "static" else used)


@pytest.mark.parametrize("layout", ["static", "compact"])
def test_compiled_adaptive_dispatch_is_one_graph_for_every_count(layout):
    """Under torch.compile one graph serves every used count (compact: an unbacked size; static: a
    tensor), equal to eager (bf16 on a CPU, where the grouped matmul's meta needs it)."""
    torch.manual_seed(7)
    moe = MoE(d_model=16, d_ff=16, num_experts=8, top_k=4, router_threshold=0.6)
    moe.impl, moe.adaptive_layout = "grouped", layout
    with torch.no_grad():
        moe.router.proj.weight.mul_(5.0)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(moe, backend="aot_eager", fullgraph=True)
    counts = set()
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        for _ in range(3):
            x = torch.randn(2, 24, 16, requires_grad=True)
            results = []
            for fn in (compiled, moe):
                with torch.autocast("cpu", torch.bfloat16):
                    out, routing = fn(x)
                results.append((out, *torch.autograd.grad(out.float().square().sum(), [x, moe.experts.w_in])))
            counts.add(int(routing.used.sum()))
            for a, b in zip(*results):
                torch.testing.assert_close(a, b)
    assert len(counts) > 1 and counters["stats"]["unique_graphs"] == 1


def test_zero_threshold_is_fixed_top_k():
    torch.manual_seed(5)
    moe = MoE(d_model=16, d_ff=16, num_experts=8, top_k=3)
    routing = moe.router(torch.randn(50, 16))
    assert routing.used.all() and routing.experts_per_token.item() == 3.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("num_experts", [8, 32])
def test_adaptive_grouped_dispatch_on_cuda_matches_the_expert_loop_without_looping(num_experts, monkeypatch):
    torch.manual_seed(num_experts)
    moe = MoE(d_model=256, d_ff=512, num_experts=num_experts, top_k=4, router_threshold=0.5).cuda()
    with torch.no_grad():   # a confident router (a fresh one is near uniform: 4 of 32 experts sum to ~0.13)
        moe.router.proj.weight.mul_(30.0)
    x = torch.randn(4, 512, 256, device="cuda", requires_grad=True)
    results = []
    for impl in ("grouped", "loop"):
        moe.impl = impl
        with monkeypatch.context() as patch:
            if impl == "grouped":
                patch.setattr(Experts, "forward_loop", lambda *a: pytest.fail("per-expert loop"))
            with torch.autocast("cuda", torch.bfloat16):
                out, routing = moe(x)
            grads = torch.autograd.grad(out.float().square().sum(), [x, moe.experts.w_in, moe.experts.w_out])
        assert 1 <= routing.experts_per_token.item() < 4
        results.append((out.float(), *grads))
    for a, b in zip(*results):
        assert torch.isfinite(a).all()
        assert ((a - b).norm() / b.norm()).item() < 2e-2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_swiglu_over_the_used_rows_equals_the_plain_swiglu(device):
    """``moe_kernels.swiglu`` (Triton on CUDA) against silu(gate) * up on fresh random rows, forward
    and gradient, over the rows before ``rows``; odd sizes (not whole tiles)."""
    from autotune.model.moe_kernels import swiglu
    for M, d_ff, n in [(333, 200, 250), (64, 128, 64), (1000, 1024, 1)]:
        gu = torch.randn(M, 2 * d_ff, device=device, dtype=torch.bfloat16, requires_grad=True)
        rows = torch.tensor([n], device=device, dtype=torch.int32)
        dh = torch.randn(M, d_ff, device=device, dtype=torch.bfloat16)
        out = swiglu(gu, rows)
        (grad,) = torch.autograd.grad(out, gu, dh)
        ref_gu = gu.detach().float().requires_grad_()
        gate, up = ref_gu.chunk(2, dim=-1)
        ref = F.silu(gate) * up
        (ref_grad,) = torch.autograd.grad(ref, ref_gu, dh.float())
        torch.testing.assert_close(out[:n].float(), ref[:n], rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(grad[:n].float(), ref_grad[:n], rtol=2e-2, atol=2e-2)
        if device == "cpu":                   # the plain path zeroes the tail (Triton leaves it)
            assert (out[n:] == 0).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["static", "compact"])
def test_adaptive_dispatch_compiled_by_inductor_on_cuda_equals_eager(layout):
    """Inductor's CUDA kernels (and the Triton SwiGLU) over a changing used count: one graph, eager's
    outputs and gradients."""
    torch.manual_seed(11)
    moe = MoE(d_model=256, d_ff=512, num_experts=8, top_k=4, router_threshold=0.5).cuda()
    moe.adaptive_layout = layout
    with torch.no_grad():
        moe.router.proj.weight.mul_(30.0)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(moe, fullgraph=True)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        for _ in range(3):
            x = torch.randn(4, 512, 256, device="cuda", requires_grad=True)
            results = []
            for fn in (compiled, moe):
                with torch.autocast("cuda", torch.bfloat16):
                    out, routing = fn(x)
                grads = torch.autograd.grad(out.float().square().sum(), [x, moe.experts.w_in, moe.router.proj.weight])
                results.append((out.float(), *grads))
            assert 1 < routing.experts_per_token.item() < 4
            for a, b in zip(*results):
                assert ((a - b).norm() / b.norm()).item() < 2e-2
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("num_experts", [1, 4])
def test_dense_and_moe_feed_forwards_share_one_interface(num_experts):
    """A block holds either kind and reads the same (out, FFNAux) from both; the dense one is the
    plain SwiGLU on fresh random inputs, with no balance loss and one expert a token."""
    from autotune.model import ModelConfig
    from autotune.model.moe import DenseFFN, FFNAux
    from autotune.model.transformer import Block
    torch.manual_seed(3)
    block = Block(ModelConfig(d_model=16, n_heads=2, d_ff=24, num_experts=num_experts, top_k=2))
    x = torch.randn(2, 5, 16)
    out, aux = block.ffn(x)
    assert isinstance(aux, FFNAux) and out.shape == x.shape
    assert aux.balance_loss.shape == () and aux.experts_per_token.shape == ()
    assert aux.load.shape == (num_experts,)
    if num_experts == 1:
        ffn = block.ffn
        assert isinstance(ffn, DenseFFN)
        w_gate, w_up = ffn.w_in.weight.chunk(2)
        reference = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ ffn.w_out.weight.T
        torch.testing.assert_close(out, reference)
        assert (aux.balance_loss.item(), aux.load.tolist(), aux.experts_per_token.item()) == (0.0, [1.0], 1.0)
    else:
        torch.testing.assert_close(out, naive_moe(block.ffn, x))
        assert aux.experts_per_token.item() == 2.0
