"""Batches: the ``Batch`` every task yields, and token-budget batching for variable-length text.

Owns: the batch container, the loss mask convention (``IGNORE_INDEX`` in ``targets``), grouping of
pieces of similar length under a token budget, padding them into tensors, and drawing batches ahead
in a background thread (``prefetch``) so that a GPU never waits for them.
Must not know about: the model, the training loop, Optuna.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100      # targets equal to this carry no loss (torch's cross_entropy default)
PAD_TOKEN = 0            # inputs at padded positions; their targets are IGNORE_INDEX
PAD_MULTIPLE = 8         # padded lengths are rounded up to this (fewer shapes for torch.compile)


@dataclass(frozen=True)
class Batch:
    """One batch of next-token prediction.

    Attributes:
        inputs: ``(B, T)`` int64 tokens.
        targets: ``(B, T)`` int64; ``targets[b, t]`` is the token to predict after ``inputs[b, :t+1]``,
            or ``IGNORE_INDEX`` where no loss is taken (padding; non-answer positions of a task).
        num_tokens: real (non-padding) input tokens, what throughput counts.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    num_tokens: int

    def to(self, device: torch.device | str) -> "Batch":
        non_blocking = torch.device(device).type == "cuda"
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking), self.num_tokens)


def padded_length(length: int, cap: int | None = None) -> int:
    """``length`` rounded up to ``PAD_MULTIPLE``, but never beyond ``cap``."""
    padded = -(-length // PAD_MULTIPLE) * PAD_MULTIPLE
    return min(padded, cap) if cap is not None else padded


def token_budget_batches(lengths: np.ndarray, tokens_per_batch: int, rng: np.random.Generator,
                         *, cap: int | None = None) -> list[np.ndarray]:
    """Group item indices into batches whose padded size ``B * T`` stays within ``tokens_per_batch``.

    Items are sorted by length (ties broken at random), so each batch holds items of similar length
    and little of the budget goes to padding; the batch order is then shuffled. An item longer than
    the budget forms a batch of its own.

    Args:
        lengths: ``(N,)`` input length of each item (tokens the model sees, before padding).
        tokens_per_batch: budget of padded tokens per batch.
        rng: source of the tie-breaking and of the batch order.
        cap: longest padded length (the sequence length the model was built for).
    Returns:
        Index arrays into ``lengths``, one per batch, every index exactly once.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]          # by length, random ties
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        if end < len(order):
            longest = padded_length(int(lengths[order[end]]), cap)    # ascending: the newcomer
            if (end + 1 - start) * longest <= tokens_per_batch:
                continue
        batches.append(order[start:end])
        start = end
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(pieces: list[np.ndarray], *, cap: int | None = None) -> Batch:
    """Pad token pieces (each ``inputs + 1`` tokens long) into one right-padded ``Batch``."""
    width = padded_length(max(len(p) - 1 for p in pieces), cap)
    inputs = np.full((len(pieces), width), PAD_TOKEN, dtype=np.int64)
    targets = np.full((len(pieces), width), IGNORE_INDEX, dtype=np.int64)
    for row, piece in enumerate(pieces):
        n = len(piece) - 1
        inputs[row, :n] = piece[:-1]
        targets[row, :n] = piece[1:]
    num_tokens = sum(len(p) - 1 for p in pieces)
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), num_tokens)


_DONE = object()


def prefetch(batches: Iterator[Batch], depth: int = 2, *, pin_memory: bool = False) -> Iterator[Batch]:
    """The same batches, in the same order, drawn up to ``depth`` ahead by a background thread.

    ``pin_memory`` pins them (for asynchronous copies to a GPU). Closing the returned generator
    stops the thread; an error in the thread is raised here.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if pin_memory:
                    batch = Batch(batch.inputs.pin_memory(), batch.targets.pin_memory(), batch.num_tokens)
                if not offer(batch):
                    return
            offer(_DONE)
        except BaseException as error:          # handed to the consumer, raised there
            offer(error)

    threading.Thread(target=work, name="prefetch", daemon=True).start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
