"""The whole model: its interface, counts, causality, and that keep_ratio 1.0 is dense attention."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from autotune.model import ModelConfig, Transformer

SMALL = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=32, num_experts=4, top_k=2,
                    block_size=16, window=16, keep_ratio=0.3, max_seq_len=256)


@pytest.mark.parametrize("cfg", [
    SMALL,
    replace(SMALL, num_experts=1),
    replace(SMALL, attention="dense", router="sigmoid", shared_expert=True, top_k=1),
])
def test_forward_returns_logits_and_aux(cfg):
    model = Transformer(cfg)
    logits, aux = model(torch.randint(0, cfg.vocab_size, (3, 100)))
    assert logits.shape == (3, 100, cfg.vocab_size)
    assert aux.aux_loss.shape == () and aux.aux_loss.item() >= 0
    assert aux.expert_load.shape == (cfg.n_layers, cfg.num_experts)
    torch.testing.assert_close(aux.expert_load.sum(-1), torch.ones(cfg.n_layers))
    # 100 tokens are 7 blocks of 16; with keep 0.3 and a 16-token window the query blocks keep
    # 1, 2, 2, 2, 2, 2, 3 of their 1..7 causal key blocks: 14 of 28
    assert isinstance(aux.keep_share, float)
    assert aux.keep_share == (1.0 if cfg.attention == "dense" else 14 / 28)


def test_aux_loss_is_the_coefficient_times_the_summed_balance_losses():
    model = Transformer(SMALL)
    _, aux = model(torch.randint(0, 50, (2, 64)))
    assert SMALL.n_layers * SMALL.aux_loss_coef * 0.99 < aux.aux_loss.item() < SMALL.n_layers * SMALL.aux_loss_coef * 4


def test_active_parameters_count_only_top_k_experts():
    model = Transformer(SMALL)
    total, active = model.num_parameters(active=False), model.num_parameters(active=True)
    per_expert = 3 * SMALL.d_model * SMALL.d_ff
    assert total == sum(p.numel() for p in model.parameters())
    assert total - active == SMALL.n_layers * (SMALL.num_experts - SMALL.top_k) * per_expert
    full = Transformer(replace(SMALL, top_k=4))
    assert full.num_parameters(active=True) == full.num_parameters(active=False)
    assert model.flops_per_token(256) > 6 * active * 0.9


def test_logits_of_earlier_positions_ignore_future_tokens():
    torch.manual_seed(0)
    model = Transformer(SMALL).eval()
    tokens = torch.randint(0, 50, (2, 160))
    changed = tokens.clone()
    changed[:, 90:] = torch.randint(0, 50, (2, 70))
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :90], b[:, :90], rtol=0, atol=1e-5)


def test_keep_ratio_one_is_the_dense_model():
    torch.manual_seed(0)
    sparse = Transformer(replace(SMALL, keep_ratio=1.0))
    dense = Transformer(replace(SMALL, attention="dense"))
    dense.load_state_dict(sparse.state_dict())
    tokens = torch.randint(0, 50, (2, 100))
    (a, aux_a), (b, _) = sparse(tokens), dense(tokens)
    torch.testing.assert_close(a, b)
    assert aux_a.keep_share == 1.0


def test_sparse_model_trains_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = Transformer(replace(SMALL, shared_expert=True))
    tokens = torch.randint(0, 50, (4, 128))
    logits, aux = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()) + aux.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_sequences_longer_than_max_seq_len_still_run():
    model = Transformer(replace(SMALL, max_seq_len=32))
    logits, _ = model(torch.randint(0, 50, (1, 80)))
    assert logits.shape == (1, 80, 50)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_model_on_cuda_matches_the_cpu_reference():
    """fp32: the same function as on CPU (flex attention). bf16 autocast: the same loss within 2%
    (routing and block choices may flip under bf16 rounding, so logits are compared only through it)."""
    cfg = replace(SMALL, d_model=128, n_heads=2, d_ff=256, block_size=128, window=128, keep_ratio=0.3,
                  max_seq_len=2048, num_experts=8)
    torch.manual_seed(0)
    model = Transformer(cfg).cuda()
    cpu_model = Transformer(cfg)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    tokens = torch.randint(0, 50, (2, 2048), device="cuda")
    compiled = torch.compile(model)
    with torch.no_grad():
        ref, _ = cpu_model(tokens.cpu())
        logits, _ = compiled(tokens)
        assert ((logits.cpu() - ref).norm() / ref.norm()).item() < 1e-3
        with torch.autocast("cuda", torch.bfloat16):
            logits, aux = compiled(tokens)
    loss = lambda x: torch.nn.functional.cross_entropy(x.float().flatten(0, 1)[:-1], tokens.cpu().flatten()[1:])
    assert loss(logits.cpu()).item() == pytest.approx(loss(ref).item(), rel=2e-2)
    assert torch.isfinite(aux.aux_loss)


# ------------------------------------------------------------------------------- length schedule
SCHEDULED = replace(SMALL, keep_schedule="length", keep_short=0.8, keep_long=0.2, short_len=256, long_len=1024,
                    block_size=16, window=16, max_seq_len=2048)


def attention_reference(attn, x, cos, sin, keep_ratio: float):
    """The attention layer written out: projections, rotary, selection at a Python float ratio,
    explicit-mask softmax attention in float64."""
    from autotune.model.attention import masked_attention, select_blocks
    from autotune.model.transformer import apply_rotary
    B, T, C = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.n_heads, C // attn.n_heads).permute(2, 0, 3, 1, 4)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    mask = select_blocks(q, k, attn.cfg.block_size, attn.cfg.window, keep_ratio).token_mask()
    y = masked_attention(q.double(), k.double(), v.double(), mask).float()
    return attn.proj(y.transpose(1, 2).reshape(B, T, C))


@pytest.mark.parametrize("T", [64, 256, 512, 1024, 2048])
def test_length_schedule_attention_equals_the_masked_reference_at_the_scheduled_ratio(T):
    from autotune.model.attention import kept_share, scheduled_keep_ratio
    from autotune.model.transformer import CausalSelfAttention, rotary_tables
    torch.manual_seed(T)
    attn = CausalSelfAttention(SCHEDULED)
    x = torch.randn(1, T, SCHEDULED.d_model)
    cos, sin = rotary_tables(T, SCHEDULED.d_model // SCHEDULED.n_heads, SCHEDULED.rope_base)
    ratio = scheduled_keep_ratio(T, 0.8, 0.2, 256, 1024)
    assert attn.keep_ratio_at(T) == ratio and attn.keep_ratio(T).item() == ratio
    assert attn.keep_share(T) == kept_share(T, 16, 16, ratio)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cos, sin), attention_reference(attn, x, cos, sin, ratio),
                                   rtol=1e-4, atol=1e-5)


def test_the_model_reports_the_realised_share_of_the_schedule_at_each_length():
    from autotune.model.attention import kept_share, scheduled_keep_ratio
    model = Transformer(replace(SCHEDULED, n_layers=1))
    shares = []
    for T in (64, 256, 512, 1024, 2048):
        with torch.no_grad():
            _, aux = model(torch.randint(0, 50, (1, T)))
        assert aux.keep_share == kept_share(T, 16, 16, scheduled_keep_ratio(T, 0.8, 0.2, 256, 1024))
        shares.append(aux.keep_share)
    assert shares == sorted(shares, reverse=True) and shares[-1] < 0.3


def test_fixed_schedule_ignores_the_length_knobs():
    torch.manual_seed(0)
    fixed = Transformer(SMALL)
    other = Transformer(replace(SMALL, keep_short=1.0, keep_long=0.05, short_len=10, long_len=20))
    other.load_state_dict(fixed.state_dict())
    tokens = torch.randint(0, 50, (2, 100))
    (a, aux_a), (b, aux_b) = fixed(tokens), other(tokens)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert aux_a.keep_share == aux_b.keep_share < 1.0


def test_dense_below_a_length_is_the_schedule_with_a_step_there():
    """The former ``dense_below: 128`` with keep_ratio 0.3."""
    torch.manual_seed(0)
    cfg = replace(SMALL, keep_schedule="length", keep_short=1.0, keep_long=0.3, short_len=127, long_len=128)
    model, dense = Transformer(cfg), Transformer(replace(SMALL, attention="dense"))
    dense.load_state_dict(model.state_dict())
    short, long = torch.randint(0, 50, (2, 100)), torch.randint(0, 50, (2, 160))
    torch.testing.assert_close(model(short)[0], dense(short)[0])
    assert model(short)[1].keep_share == 1.0
    sparse = Transformer(SMALL)
    sparse.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(long)[0], sparse(long)[0], rtol=0, atol=0)


@pytest.mark.parametrize("field,value", [("keep_schedule", "adaptive"), ("short_len", 1024),
                                         ("router_threshold", 1.0), ("router_threshold", -0.1)])
def test_bad_schedule_or_threshold_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Transformer(replace(SMALL, **{field: value}))


# ------------------------------------------------------------------------------- adaptive top-k
def test_adaptive_model_reports_the_experts_a_token_used_and_counts_only_those():
    torch.manual_seed(0)
    cfg = replace(SMALL, top_k=4, router_threshold=0.6)
    model = Transformer(cfg)
    _, aux = model(torch.randint(0, 50, (2, 64)))
    used = aux.experts_per_token.item()
    assert 1 <= used <= 4 and aux.experts_per_token.shape == ()
    per_expert = 3 * cfg.d_model * cfg.d_ff
    full = model.num_parameters(active=True)
    assert model.num_parameters(active=True, active_experts=4) == full
    assert full - model.num_parameters(active=True, active_experts=used) == pytest.approx(
        cfg.n_layers * (4 - used) * per_expert)
    assert model.flops_per_token(256) - model.flops_per_token(256, active_experts=used) == pytest.approx(
        6 * cfg.n_layers * (4 - used) * per_expert)


def test_fixed_top_k_and_dense_models_report_their_experts_per_token():
    tokens = torch.randint(0, 50, (2, 32))
    assert Transformer(SMALL)(tokens)[1].experts_per_token.item() == SMALL.top_k
    assert Transformer(replace(SMALL, num_experts=1))(tokens)[1].experts_per_token.item() == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_length_schedule_on_cuda_matches_the_reference_and_one_graph_serves_every_schedule():
    """FlexAttention under the schedule equals the masked reference; other schedules (other ratios
    at the same length) reuse the compiled graph: the ratio is data, not a constant."""
    import contextlib
    from autotune.model.transformer import CausalSelfAttention, rotary_tables
    T = 1024
    base = replace(SCHEDULED, d_model=128, n_heads=2, block_size=64, window=64, short_len=256, long_len=4096)
    x = torch.randn(2, T, 128, device="cuda")
    cos, sin = (t.cuda() for t in rotary_tables(T, 64, base.rope_base))
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    torch._dynamo.reset()
    try:
        for i, (short, long) in enumerate([(0.8, 0.2), (0.6, 0.3), (0.9, 0.1)]):
            torch.manual_seed(0)
            attn = CausalSelfAttention(replace(base, keep_short=short, keep_long=long)).cuda()
            no_recompile = torch.compiler.set_stance("fail_on_recompile") if i else contextlib.nullcontext()
            with torch.no_grad(), no_recompile:
                out = attn(x, cos, sin)
            with torch.no_grad():
                ref = attention_reference(attn, x, cos, sin, attn.keep_ratio_at(T))
            assert ((out - ref).norm() / ref.norm()).item() < 2e-3
    finally:
        torch.set_float32_matmul_precision(saved)
