"""The data a trial trains on: associative recall, token files, token-budget and cost-model batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autotune.data import (IGNORE_INDEX, PAD_TOKEN, AssociativeRecall, Batch, TextFile, build_dataset, prefetch,
                           collate, load_tokens, split_pieces, token_budget_batches)


def _task(**kw) -> AssociativeRecall:
    args = dict(seq_len=64, num_pairs=6, vocab_size=32, batch_size=8, seed=0)
    return AssociativeRecall(**{**args, **kw})


# --- associative recall ----------------------------------------------------------------------

def test_recall_batches_have_the_configured_shape_and_vocabulary():
    batch = next(_task().train_batches())
    assert batch.inputs.shape == batch.targets.shape == (8, 64)
    assert batch.inputs.dtype == batch.targets.dtype == torch.int64
    assert 0 <= batch.inputs.min() and batch.inputs.max() < 32
    assert batch.num_tokens == 8 * 64


def test_recall_is_deterministic_by_seed_and_seeds_differ():
    a, b, c = (next(_task(seed=s).train_batches()) for s in (3, 3, 4))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_recall_validation_set_is_fixed_and_apart_from_training():
    task = _task(eval_batches=3)
    first, second = task.val_batches(), task.val_batches()
    assert len(first) == 3
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(first, second))
    train = [b.inputs for _, b in zip(range(3), task.train_batches())]
    assert not any(torch.equal(t, v.inputs) for t in train for v in first)


def test_recall_loss_is_taken_only_where_a_queried_key_asks_for_its_value():
    task = _task()
    batch = next(task.train_batches())
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        pairs = dict(zip(inputs[0:12:2], inputs[1:12:2]))            # the 6 key-value pairs
        assert len(pairs) == 6                                       # keys of a sequence are distinct
        answer_positions = [t for t, y in enumerate(targets) if y != IGNORE_INDEX]
        assert len(answer_positions) == 6                            # each key queried once
        assert all(t >= 12 for t in answer_positions)                # never inside the pairs
        assert sorted(inputs[t] for t in answer_positions) == sorted(pairs)
        for t in answer_positions:
            assert targets[t] == pairs[inputs[t]]                    # the value paired with the key
            assert t + 1 == len(inputs) or inputs[t + 1] == targets[t]   # and it is next-token


def test_recall_with_more_queries_asks_every_key_and_some_again():
    batch = next(_task(num_queries=20).train_batches())
    for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
        pairs = dict(zip(inputs[0:12:2], inputs[1:12:2]))
        asked = [(inputs[t], y) for t, y in enumerate(targets) if y != IGNORE_INDEX]
        assert len(asked) == 20 and {k for k, _ in asked} == set(pairs)
        assert all(pairs[k] == y for k, y in asked)


def test_recall_rejects_sizes_that_cannot_hold_the_pairs():
    with pytest.raises(ValueError, match="num_pairs"):
        _task(num_pairs=20, vocab_size=32)                           # only 15 keys
    with pytest.raises(ValueError, match="seq_len"):
        _task(seq_len=16, num_pairs=6)
    with pytest.raises(ValueError, match="num_queries"):
        _task(seq_len=64, num_pairs=6, num_queries=40)                  # 26 slots after the pairs


# --- token files -----------------------------------------------------------------------------

def test_txt_files_are_bytes_and_bin_files_uint16(tmp_path, tokens_bin):
    path = tmp_path / "a.txt"
    path.write_bytes("héllo".encode())
    assert load_tokens(path).tolist() == list("héllo".encode())
    bin_path, tokens = tokens_bin
    assert np.array_equal(load_tokens(bin_path), tokens)
    with pytest.raises(ValueError, match="unknown token file type"):
        load_tokens(tmp_path / "a.csv")


def test_pieces_cover_every_target_once_and_stop_at_document_ends():
    tokens = np.array([5, 6, 7, 0, 8, 9, 0, 1, 2, 3, 4, 5, 6, 0, 7])        # 0 ends documents
    starts, lengths = split_pieces(tokens, seq_len=3, eot_token=0)
    pieces = [tokens[s:s + n].tolist() for s, n in zip(starts, lengths)]
    assert pieces == [[5, 6, 7, 0], [8, 9, 0], [1, 2, 3, 4], [4, 5, 6, 0]]   # [7] alone has no target
    targets = sum(n - 1 for n in lengths)
    assert targets == 3 + 2 + 3 + 3


def test_one_stream_without_an_end_token():
    starts, lengths = split_pieces(np.arange(10), seq_len=4, eot_token=None)
    assert starts.tolist() == [0, 4, 8] and lengths.tolist() == [5, 5, 2]


def test_text_file_reads_a_byte_vocabulary_and_holds_out_its_tail(lines_txt):
    data = TextFile(lines_txt, seq_len=32, tokens_per_batch=128, eot_token=10, val_fraction=0.2)
    assert data.vocab_size == 256
    train_starts, val_starts = data.train_pieces[0], data.val_pieces[0]
    assert train_starts.max() < val_starts.min()                         # validation is the tail
    assert len(val_starts) == pytest.approx(0.2 * (len(train_starts) + len(val_starts)), abs=1)


def test_bin_file_vocabulary_is_its_largest_token_plus_one(tokens_bin):
    path, tokens = tokens_bin
    data = build_dataset("text", data_path=str(path), seq_len=64, batch_size=4, eot_token=999)
    assert data.vocab_size == 1000
    batch = next(data.train_batches())
    assert batch.inputs.max() < 1000 and batch.inputs.shape[1] <= 64


def test_text_batches_predict_the_next_token_and_pad_without_loss(lines_txt):
    data = TextFile(lines_txt, seq_len=32, tokens_per_batch=256, eot_token=10)
    tokens = load_tokens(lines_txt)
    for _, batch in zip(range(5), data.train_batches()):
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
            n = sum(y != IGNORE_INDEX for y in targets)
            assert targets[n:] == [IGNORE_INDEX] * (len(targets) - n)       # right padding only
            assert inputs[n:] == [PAD_TOKEN] * (len(inputs) - n)
            assert inputs[1:n] == targets[:n - 1]                          # shifted by one
            text = bytes(tokens).find(bytes(inputs[:n] + targets[n - 1:n]))
            assert text >= 0                                               # a real slice of the file


# --- token-budget batching -------------------------------------------------------------------

def test_token_budget_batches_use_every_item_once_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=500)
    batches = token_budget_batches(lengths, 1024, np.random.default_rng(1), cap=200)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for index in batches:
        padded = -(-int(lengths[index].max()) // 8) * 8
        assert len(index) * min(padded, 200) <= 1024


def test_token_budget_batches_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=2000)
    batches = token_budget_batches(lengths, 2048, np.random.default_rng(1), cap=200)
    spread = np.mean([lengths[i].max() - lengths[i].min() for i in batches if len(i) > 1])
    random_spread = np.mean([np.ptp(rng.choice(lengths, size=10)) for _ in range(100)])
    assert spread < 0.1 * random_spread                                  # ~2 tokens vs ~160 at random
    padding = sum(len(i) * lengths[i].max() - lengths[i].sum() for i in batches) / lengths.sum()
    assert padding < 0.05


def test_token_budget_batches_are_shuffled_and_deterministic_by_seed():
    lengths = np.random.default_rng(0).integers(1, 100, size=300)
    a, b, c = (token_budget_batches(lengths, 512, np.random.default_rng(s)) for s in (5, 5, 6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    longest = [int(lengths[i].max()) for i in a]
    assert longest != sorted(longest)                                    # not in length order


def test_an_item_longer_than_the_budget_is_a_batch_of_its_own():
    batches = token_budget_batches(np.array([4, 300, 5]), 64, np.random.default_rng(0))
    assert sorted(len(i) for i in batches) == [1, 2]


def test_text_training_batches_keep_to_the_token_budget(lines_txt):
    data = TextFile(lines_txt, seq_len=48, tokens_per_batch=160, eot_token=10)
    shapes = [tuple(b.inputs.shape) for _, b in zip(range(30), data.train_batches())]
    assert all(B * T <= 160 for B, T in shapes)
    assert len({B for B, _ in shapes}) > 1                               # batch size follows length


def test_collate_rounds_the_padded_length_up_but_not_past_the_cap():
    assert collate([np.arange(4), np.arange(6)]).inputs.shape == (2, 8)      # 5 inputs -> 8
    batch = collate([np.arange(4), np.arange(11)], cap=12)
    assert batch.inputs.shape == (2, 12)                                    # 10 -> 16, capped
    assert batch.num_tokens == 3 + 10


def test_prefetch_yields_the_same_batches_in_order_and_raises_the_producers_error():
    task = _task()
    plain = [b.inputs for _, b in zip(range(5), task.train_batches())]
    ahead = prefetch(task.train_batches(), depth=2)
    assert all(torch.equal(p, next(ahead).inputs) for p in plain)
    ahead.close()

    def broken():
        yield next(task.train_batches())
        raise RuntimeError("disk gone")

    batches = prefetch(broken())
    next(batches)
    with pytest.raises(RuntimeError, match="disk gone"):
        next(batches)


# --- cost-model batching ---------------------------------------------------------------------

def test_batch_cost_is_fixed_plus_tokens_plus_visited_attention_pairs():
    from autotune.data import BatchCost
    cost = BatchCost(fixed=2.0, per_token=3.0, per_pair=0.5, share=lambda T: 0.25 if T > 100 else 1.0)
    assert cost(4, 10) == 2.0 + 3.0 * 40 + 0.5 * 4 * (10 * 11 / 2)
    assert cost(2, 200) == 2.0 + 3.0 * 400 + 0.5 * 2 * 0.25 * (200 * 201 / 2)
    assert BatchCost()(8, 64) == 8 * 64                                  # the default: padded tokens


@pytest.mark.parametrize("share", [None, lambda T: min(1.0, 256 / T)])
def test_fitted_cost_recovers_the_cost_of_measured_steps(share):
    from autotune.data import BatchCost, fit_batch_cost
    true = BatchCost(fixed=3e-3, per_token=2e-6, per_pair=4e-9, share=share)
    rng = np.random.default_rng(0)
    shapes = [(int(b), int(t)) for b, t in zip(rng.integers(1, 64, 12), rng.choice([64, 256, 1024, 2048], 12))]
    seconds = [true(b, t) * (1 + 0.01 * rng.standard_normal()) for b, t in shapes]
    fitted = fit_batch_cost(shapes, seconds, share=share)
    for b, t in [(32, 128), (4, 2048), (8, 64), (16, 1000)]:
        assert fitted(b, t) == pytest.approx(true(b, t), rel=0.05)
    if share is None:                       # dense: quadratic and linear terms apart
        assert fitted.per_token == pytest.approx(true.per_token, rel=0.1)
        assert fitted.per_pair == pytest.approx(true.per_pair, rel=0.1)


def test_fitted_cost_has_no_negative_coefficient():
    from autotune.data import fit_batch_cost
    rng = np.random.default_rng(1)
    shapes = [(int(b), int(t)) for b, t in zip(rng.integers(1, 32, 10), rng.integers(16, 512, 10))]
    seconds = [1e-5 * b * t * (1 + 0.2 * rng.standard_normal()) for b, t in shapes]   # tokens alone, noisy
    fitted = fit_batch_cost(shapes, seconds)
    assert min(fitted.fixed, fitted.per_token, fitted.per_pair) >= 0 and fitted.per_token > 0


def test_cost_batches_with_a_token_cost_are_the_token_budget_batches():
    from autotune.data import BatchCost, cost_budget_batches
    lengths = np.random.default_rng(0).integers(1, 200, size=400)
    a = token_budget_batches(lengths, 1024, np.random.default_rng(3), cap=200)
    b = cost_budget_batches(lengths, BatchCost(), 1024, np.random.default_rng(3), cap=200)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_cost_batches_keep_to_the_cost_batch_size_and_memory_budgets_and_use_every_item_once():
    from autotune.data import BatchCost, cost_budget_batches
    lengths = np.random.default_rng(0).integers(1, 512, size=600)
    cost = BatchCost(fixed=0.0, per_token=1.0, per_pair=0.02)
    budget = cost(4, 512)
    batches = cost_budget_batches(lengths, cost, budget, np.random.default_rng(1), cap=512,
                                  max_batch_size=40, max_tokens=6000)
    assert sorted(np.concatenate(batches).tolist()) == list(range(600))
    for index in batches:
        n, longest = len(index), min(512, -(-int(lengths[index].max()) // 8) * 8)
        assert n == 1 or (cost(n, longest) <= budget and n <= 40 and n * longest <= 6000)
    # attention makes long pieces dear: short-piece batches carry more tokens than long-piece ones
    tokens = {int(lengths[i].max()) // 128: len(i) * int(lengths[i].max()) for i in batches}
    assert tokens[0] > tokens[3]


def test_text_file_batches_by_cost_within_the_cost_of_a_full_length_token_batch(lines_txt):
    from autotune.data import BatchCost
    cost = BatchCost(per_token=1.0, per_pair=0.5)
    data = TextFile(lines_txt, seq_len=48, tokens_per_batch=160, eot_token=10, batch_cost=cost, max_batch_size=12)
    shapes = [tuple(b.inputs.shape) for _, b in zip(range(30), data.train_batches())]
    budget = cost(160 // 48, 48)
    assert all(B == 1 or (cost(B, T) <= budget and B <= 12) for B, T in shapes)
    assert any(B * T > 160 for B, T in shapes)                          # short pieces: more tokens


def test_cost_probe_fits_the_cost_of_steps_of_several_micro_batches():
    """Fresh random steps of 1-3 micro-batches, timed by a known cost plus 1 % noise: the probe's
    fit predicts the plain sum of the micro-batches' costs."""
    from autotune.data import BatchCost, CostProbe
    rng = np.random.default_rng()
    share = lambda T: min(1.0, 128 / T)                                     # noqa: E731 - a sparse schedule
    true = BatchCost(fixed=float(rng.uniform(1e-3, 5e-3)), per_token=float(rng.uniform(1e-6, 4e-6)),
                     per_pair=float(rng.uniform(1e-9, 8e-9)), share=share)
    probe = CostProbe(16, share=share)
    while not probe.done:
        micro = [(int(rng.integers(1, 64)), int(rng.choice([64, 256, 1024, 2048]))) for _ in range(rng.integers(1, 4))]
        probe.add(micro, sum(true(b, t) for b, t in micro) * (1 + 0.01 * rng.standard_normal()))
    assert len(probe.seconds) == 16
    fitted = probe.fit()
    for _ in range(10):
        b, t = int(rng.integers(1, 64)), int(rng.choice([64, 512, 2048]))
        assert fitted(b, t) == pytest.approx(true(b, t), rel=0.1)


def test_a_cost_model_that_arrives_mid_epoch_regroups_the_pieces_not_yet_drawn(lines_txt):
    from autotune.data import BatchCost
    data = TextFile(lines_txt, seq_len=48, tokens_per_batch=160, eot_token=10)
    epoch_tokens = int((data.train_pieces[1] - 1).sum())
    batches = data.train_batches()
    drawn = [next(batches) for _ in range(3)]
    assert all(b.inputs.numel() <= 160 for b in drawn)                     # the token budget so far
    cost = BatchCost(per_token=1.0, per_pair=0.5)
    data.use_batch_cost(cost, max_batch_size=12, max_tokens=400)
    while sum(b.num_tokens for b in drawn) < epoch_tokens:
        drawn.append(next(batches))
        B, T = drawn[-1].inputs.shape
        assert B == 1 or (cost(B, T) <= cost(160 // 48, 48) and B <= 12 and B * T <= 400)
    assert sum(b.num_tokens for b in drawn) == epoch_tokens                 # every piece once, then a new epoch
    assert any(b.inputs.numel() > 160 for b in drawn[3:])                   # cost batches of short pieces hold more


def test_a_batch_counts_the_causal_attention_pairs_of_its_real_tokens_only():
    """Model FLOPs of variable-length text: each row's own triangle, not the padded one."""
    batch = collate([np.arange(4), np.arange(11)])                    # 3 and 10 real input tokens, padded to 16
    assert batch.inputs.shape == (2, 16)
    assert batch.causal_pairs == 3 * 4 / 2 + 10 * 11 / 2
    full = Batch(torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long), 15)
    assert full.causal_pairs == 3 * 5 * 6 / 2                        # fixed-length tasks: every row full
    assert batch.to("cpu").causal_pairs == batch.causal_pairs
