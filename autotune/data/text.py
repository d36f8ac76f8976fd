"""Real text: byte-level ``.txt`` files and pre-tokenized ``.bin`` files of uint16 tokens.

Owns: reading token files (memory-mapped, so large files cost no RAM), cutting them into documents
and pieces of at most ``seq_len + 1`` tokens, the train/validation split, and batching the pieces
under a token budget or a cost model (which may arrive mid-run: ``TextFile.use_batch_cost``).
Must not know about: the model, the training loop, Optuna.

Documents: with ``eot_token`` set, every occurrence of it ends a document (and stays in it, so the
model learns where documents end); ``eot_token=10`` makes each line of a ``.txt`` a document. Without
it the file is one stream. Each document is cut into pieces of ``seq_len + 1`` tokens that overlap by
one (every token is predicted once); a shorter last piece keeps its own length, which is what the
token-budget batching groups by. The last ``val_fraction`` of the pieces, in file order, are the
validation set.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from autotune.data.batching import BatchCost, Batch, collate, cost_budget_batches, token_budget_batches

BYTE_VOCAB = 256


def load_tokens(path: str | Path) -> np.ndarray:
    """The tokens of a ``.txt`` (bytes, uint8) or ``.bin`` (little-endian uint16) file, memory-mapped."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return np.memmap(path, dtype=np.uint8, mode="r")
    if suffix == ".bin":
        return np.memmap(path, dtype="<u2", mode="r")
    raise ValueError(f"{path}: unknown token file type {suffix!r}; use .txt (bytes) or .bin (uint16)")


def split_pieces(tokens: np.ndarray, seq_len: int, eot_token: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token array into pieces of 2 to ``seq_len + 1`` tokens, not crossing document ends.

    Returns:
        ``(starts, lengths)``: int64 arrays, pieces in file order.
    """
    if eot_token is None:
        doc_starts = np.array([0], dtype=np.int64)
        doc_ends = np.array([len(tokens)], dtype=np.int64)
    else:
        doc_ends = np.flatnonzero(np.asarray(tokens) == eot_token).astype(np.int64) + 1
        if len(doc_ends) == 0 or doc_ends[-1] != len(tokens):
            doc_ends = np.append(doc_ends, len(tokens))
        doc_starts = np.concatenate([[0], doc_ends[:-1]])
    doc_lengths = doc_ends - doc_starts
    # A document of n tokens gives ceil((n - 1) / seq_len) pieces; piece j starts at j * seq_len.
    counts = np.maximum(doc_lengths - 1, 0)
    counts = -(-counts // seq_len)
    doc_of_piece = np.repeat(np.arange(len(doc_starts)), counts)
    first_piece = np.cumsum(counts) - counts
    index_in_doc = np.arange(len(doc_of_piece)) - first_piece[doc_of_piece]
    starts = doc_starts[doc_of_piece] + index_in_doc * seq_len
    lengths = np.minimum(seq_len + 1, doc_ends[doc_of_piece] - starts)
    return starts.astype(np.int64), lengths.astype(np.int64)


class TextFile:
    """Next-token prediction on a token file, in token-budget batches of similar-length pieces.

    Args:
        path: a ``.txt`` or ``.bin`` file.
        seq_len: longest input the model sees.
        tokens_per_batch: padded tokens per batch (``B * T``); at least ``seq_len``.
        seed: seeds the batch order; the same seed gives the same batches.
        eot_token: token id that ends each document, or None for one stream.
        val_fraction: share of the pieces (the file's tail) kept for validation.
        eval_batches: most validation batches an evaluation uses.
        vocab_size: tokens in the vocabulary; default 256 for ``.txt``, largest token + 1 for ``.bin``.
        batch_cost: batch by predicted cost instead of padded tokens (``cost_budget_batches``): each
            batch may cost what a token-budget batch of full-length pieces costs
            (``batch_cost(tokens_per_batch // seq_len, seq_len)``), holding at most
            ``max_batch_size`` pieces and ``max_tokens`` padded tokens (default 2 x tokens_per_batch).
    """

    def __init__(self, path: str | Path, *, seq_len: int, tokens_per_batch: int, seed: int = 0,
                 eot_token: int | None = None, val_fraction: float = 0.1, eval_batches: int = 4,
                 vocab_size: int | None = None, batch_cost: BatchCost | None = None,
                 max_batch_size: int | None = None, max_tokens: int | None = None) -> None:
        if tokens_per_batch < seq_len:
            raise ValueError(f"tokens_per_batch={tokens_per_batch} must be at least seq_len={seq_len}")
        self.path, self.seq_len, self.tokens_per_batch = Path(path), seq_len, tokens_per_batch
        self.seed, self.eval_batches = seed, eval_batches
        self.batch_cost, self.max_batch_size = batch_cost, max_batch_size
        self.max_tokens = max_tokens or 2 * tokens_per_batch
        self.tokens = load_tokens(path)
        if len(self.tokens) < 4:
            raise ValueError(f"{path}: too few tokens ({len(self.tokens)})")
        largest = int(self.tokens.max())
        if vocab_size is None:
            vocab_size = BYTE_VOCAB if self.tokens.dtype == np.uint8 else largest + 1
        if largest >= vocab_size:
            raise ValueError(f"{path}: token {largest} does not fit vocab_size={vocab_size}")
        self.vocab_size = vocab_size
        starts, lengths = split_pieces(self.tokens, seq_len, eot_token)
        if len(starts) < 2:
            raise ValueError(f"{path}: needs at least 2 pieces of text (one to validate on)")
        num_val = min(len(starts) - 1, max(1, round(val_fraction * len(starts))))
        cut = len(starts) - num_val
        self.train_pieces = (starts[:cut], lengths[:cut])
        self.val_pieces = (starts[cut:], lengths[cut:])

    def use_batch_cost(self, batch_cost: BatchCost, *, max_batch_size: int | None = None,
                       max_tokens: int | None = None) -> None:
        """Batch by ``batch_cost`` from now on (see the class); a training iterator already running
        regroups the pieces of its epoch not yet drawn (the ones a prefetch thread holds excepted)."""
        self.max_batch_size = max_batch_size
        self.max_tokens = max_tokens or 2 * self.tokens_per_batch
        self.batch_cost = batch_cost                   # last: the iterator watches this one

    def _batches(self, pieces: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch of ``pieces`` in batches; when the batch cost model changes (``use_batch_cost``)
        the pieces not yet drawn are grouped again under it."""
        starts, lengths = pieces
        left = np.arange(len(starts))                  # pieces of this epoch not yet drawn
        while len(left):
            cost = self.batch_cost
            groups = [left[index] for index in self._group(lengths[left] - 1, rng)]
            for i, index in enumerate(groups):
                if self.batch_cost is not cost:
                    left = np.concatenate(groups[i:])
                    break
                yield collate([np.asarray(self.tokens[s:s + n]) for s, n in zip(starts[index], lengths[index])],
                              cap=self.seq_len)
            else:
                left = left[:0]

    def _group(self, lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Index arrays of the pieces each batch holds (``lengths``: input tokens of each piece)."""
        if self.batch_cost is None:
            return token_budget_batches(lengths, self.tokens_per_batch, rng, cap=self.seq_len)
        budget = self.batch_cost(max(1, self.tokens_per_batch // self.seq_len), self.seq_len)
        return cost_budget_batches(lengths, self.batch_cost, budget, rng, cap=self.seq_len,
                                   max_batch_size=self.max_batch_size, max_tokens=self.max_tokens)

    def train_batches(self) -> Iterator[Batch]:
        """Endless training batches: epoch after epoch, each in a fresh order."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        while True:
            yield from self._batches(self.train_pieces, rng)

    def val_batches(self) -> list[Batch]:
        """The fixed validation set: up to ``eval_batches`` batches of the file's tail."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        batches = self._batches(self.val_pieces, rng)
        return [batch for batch, _ in zip(batches, range(self.eval_batches))]
