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
    assert isinstance(aux.keep_ratio, float)
    assert aux.keep_ratio == (1.0 if cfg.attention == "dense" else 14 / 28)


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
    assert aux_a.keep_ratio == 1.0


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
