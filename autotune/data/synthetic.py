"""Built-in synthetic task: multi-query associative recall (MQAR, as in Zoology / Based).

Owns: generating associative-recall sequences deterministically from a seed, with train and
validation streams that never share a random stream. Needs nothing downloaded.
Must not know about: the model, the training loop, Optuna.

A sequence of ``seq_len + 1`` tokens (inputs are the first ``seq_len``, targets the last ``seq_len``)::

    k1 v1 k2 v2 ... kP vP | 0 0 k2 v2 0 0 0 0 k1 v1 0 0 ... kP vP 0 0
    <--- P key-value pairs --><---- Q queries of the keys, in 2-token slots at random ---->

Every key is queried at least once; with ``Q > P`` (``num_queries``) keys are asked again at
random, which gives more answers to learn from per sequence. Token 0 is filler, keys are ``1..K`` and values ``K+1..V-1`` with ``K = (V - 1) // 2``. The loss and
the accuracy count only answer positions: where the input is a queried key and the target its value.
Answering needs attention from the query back to the pair, over up to ``seq_len`` tokens.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from autotune.data.batching import IGNORE_INDEX, Batch
from autotune.data.sizes import recall_sizes

FILLER_TOKEN = 0
TRAIN_STREAM, VAL_STREAM = 0, 1


class AssociativeRecall:
    """The associative-recall task sized by sequence length, vocabulary and pair count.

    Args:
        seq_len: input tokens per sequence; needs ``seq_len + 1 >= 2 * num_pairs + 2 * num_queries``.
        num_pairs: key-value pairs per sequence.
        num_queries: queries per sequence, at least ``num_pairs`` (the default).
        vocab_size: tokens in the vocabulary: filler, keys and values; needs
            ``(vocab_size - 1) // 2 >= num_pairs`` so the keys of a sequence are distinct.
        batch_size: sequences per batch.
        seed: seeds both streams; the same seed gives the same batches.
        eval_batches: batches in the (fixed) validation set.

    Example:
        >>> task = AssociativeRecall(seq_len=64, num_pairs=4, vocab_size=32, batch_size=2, seed=0)
        >>> batch = next(task.train_batches())
        >>> tuple(batch.inputs.shape), int((batch.targets != -100).sum())
        ((2, 64), 8)
    """

    def __init__(self, *, seq_len: int, num_pairs: int, vocab_size: int, batch_size: int,
                 num_queries: int | None = None, seed: int = 0, eval_batches: int = 4) -> None:
        self.num_keys, num_queries, num_slots = recall_sizes(
            seq_len=seq_len, num_pairs=num_pairs, vocab_size=vocab_size, num_queries=num_queries)
        self.seq_len, self.num_pairs, self.vocab_size = seq_len, num_pairs, vocab_size
        self.num_queries, self.num_slots = num_queries, num_slots
        self.batch_size, self.seed, self.eval_batches = batch_size, seed, eval_batches

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, stream]))

    def make_batch(self, rng: np.random.Generator) -> Batch:
        """One batch of fresh sequences drawn from ``rng``."""
        B, P, Q, T = self.batch_size, self.num_pairs, self.num_queries, self.seq_len
        keys = 1 + np.argsort(rng.random((B, self.num_keys)), axis=1)[:, :P]          # (B, P) distinct
        values = 1 + self.num_keys + rng.integers(0, self.vocab_size - 1 - self.num_keys, (B, P))
        seq = np.full((B, T + 1), FILLER_TOKEN, dtype=np.int64)
        seq[:, 0:2 * P:2], seq[:, 1:2 * P:2] = keys, values
        # Queries sit in 2-token slots after the pairs: key at 2P + 2*slot, its value right after.
        slots = np.sort(np.argsort(rng.random((B, self.num_slots)), axis=1)[:, :Q], axis=1)  # (B, Q)
        asked = np.concatenate([np.argsort(rng.random((B, P)), axis=1),      # every key once, then
                                rng.integers(0, P, (B, Q - P))], axis=1)    # repeats at random
        asked = np.take_along_axis(asked, np.argsort(rng.random((B, Q)), axis=1), axis=1)  # (B, Q)
        query_pos = 2 * P + 2 * slots
        rows = np.arange(B)[:, None]
        seq[rows, query_pos] = np.take_along_axis(keys, asked, axis=1)
        seq[rows, query_pos + 1] = np.take_along_axis(values, asked, axis=1)
        targets = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        targets[rows, query_pos] = seq[rows, query_pos + 1]                     # answer positions
        return Batch(torch.from_numpy(seq[:, :-1].copy()), torch.from_numpy(targets), B * T)

    def train_batches(self) -> Iterator[Batch]:
        """Endless fresh training batches."""
        rng = self._rng(TRAIN_STREAM)
        while True:
            yield self.make_batch(rng)

    def val_batches(self) -> list[Batch]:
        """The fixed validation set: ``eval_batches`` batches from a stream of their own."""
        rng = self._rng(VAL_STREAM)
        return [self.make_batch(rng) for _ in range(self.eval_batches)]
