"""Batches: the ``Batch`` every task yields, and dynamic batching for variable-length text.

Owns: the batch container, the loss mask convention (``IGNORE_INDEX`` in ``targets``), grouping of
pieces of similar length under a budget (of padded tokens, ``token_budget_batches``, or of predicted
cost, ``cost_budget_batches`` with a ``BatchCost`` model fitted by ``fit_batch_cost``), padding them
into tensors, and drawing batches ahead in a background thread (``prefetch``) so that a GPU never
waits for them.
Must not know about: the model, the training loop, Optuna.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

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
        pairs: (query, key) pairs causal attention has among the real tokens, summed over rows
            (``L (L + 1) / 2`` for a row of ``L`` real tokens: what model FLOPs count); None: every
            row is full (``B T (T + 1) / 2``).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    num_tokens: int
    pairs: float | None = None

    @property
    def causal_pairs(self) -> float:
        if self.pairs is not None:
            return self.pairs
        rows, length = self.inputs.shape
        return float(rows * attention_pairs(length))

    def to(self, device: torch.device | str) -> "Batch":
        non_blocking = torch.device(device).type == "cuda"
        return replace(self, inputs=self.inputs.to(device, non_blocking=non_blocking),
                       targets=self.targets.to(device, non_blocking=non_blocking))


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
    return _greedy_batches(lengths, lambda n, longest: n * longest <= tokens_per_batch, rng, cap)


def _greedy_batches(lengths: np.ndarray, fits, rng: np.random.Generator, cap: int | None) -> list[np.ndarray]:
    """Items sorted by length (random ties) cut into consecutive batches, each grown while
    ``fits(batch size, padded length of its longest item)``; batch order shuffled."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]          # by length, random ties
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        if end < len(order):
            longest = padded_length(int(lengths[order[end]]), cap)    # ascending: the newcomer
            if fits(end + 1 - start, longest):
                continue
        batches.append(order[start:end])
        start = end
    return [batches[i] for i in rng.permutation(len(batches))]


# --- cost-model batching ---------------------------------------------------------------------------

def attention_pairs(length: int, share: float = 1.0) -> float:
    """(query, key) pairs causal attention visits in one sequence of ``length`` tokens: the causal
    triangle ``T (T + 1) / 2``, times the share of it that sparse attention keeps (1.0 dense)."""
    return share * length * (length + 1) / 2


@dataclass(frozen=True)
class BatchCost:
    """Predicted cost (seconds of a training step, or FLOPs: any one unit) of a batch of
    ``batch_size`` sequences padded to ``length``:
    ``fixed + per_token * B * T + per_pair * B * attention_pairs(T, share(T))``.

    The token term is the matmuls (linear in length), the pair term attention (quadratic in length
    for dense, times the keep share for sparse). ``share(T)``: the share of the causal key blocks the
    model visits at length T (its keep schedule); None: dense.
    """

    fixed: float = 0.0
    per_token: float = 1.0
    per_pair: float = 0.0
    share: Callable[[int], float] | None = None

    def features(self, batch_size: int, length: int) -> tuple[float, float, float]:
        share = 1.0 if self.share is None else self.share(length)
        return 1.0, float(batch_size * length), batch_size * attention_pairs(length, share)

    def __call__(self, batch_size: int, length: int) -> float:
        one, tokens, pairs = self.features(batch_size, length)
        return self.fixed * one + self.per_token * tokens + self.per_pair * pairs


Shape = tuple[int, int]          # (batch size, padded length) of one batch


def step_features(step: Shape | list[Shape], share: Callable[[int], float] | None = None) -> np.ndarray:
    """``BatchCost.features`` of one step: of its batch, or summed over its micro-batches (a list)."""
    batches = step if isinstance(step, list) else [step]
    probe = BatchCost(share=share)
    return np.sum([probe.features(b, t) for b, t in batches], axis=0)


def fit_batch_cost(shapes: list[Shape | list[Shape]], seconds: list[float],
                   share: Callable[[int], float] | None = None) -> BatchCost:
    """The ``BatchCost`` that best predicts measured step times of batches of ``(batch_size, padded
    length)`` (or of lists of them: a step's micro-batches, whose costs add up): least squares of
    the relative error (timing noise is relative), with no coefficient negative (a negative one is
    dropped and the rest refitted). Needs steps of at least two lengths to tell the token and pair
    terms apart (where sparse attention keeps a share that falls as 1 / T, its pair term is linear
    in length too, and only the prediction is determined)."""
    target = np.asarray(seconds, dtype=np.float64)
    rows = np.array([step_features(step, share) for step in shapes]) / target[:, None]   # [steps, 3]
    target = np.ones_like(target)
    scale = np.abs(rows).max(0)
    scale[scale == 0] = 1.0                                                          # columns of 0
    active = [0, 1, 2]
    while True:
        coef = np.zeros(3)
        coef[active] = np.linalg.lstsq(rows[:, active] / scale[active], target, rcond=None)[0] / scale[active]
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            return BatchCost(*coef.tolist(), share=share)
        active.remove(min(negative, key=lambda i: coef[i] * scale[i]))


class CostProbe:
    """Measured training steps, until there are ``steps`` of them, then the ``BatchCost`` fitted to
    them (``fit_batch_cost``): how the training loop learns what a batch of each shape costs.

    ``share``: the model's keep share at each length (None: dense)."""

    def __init__(self, steps: int, share: Callable[[int], float] | None = None) -> None:
        self.steps, self.share = steps, share
        self.shapes: list[list[Shape]] = []
        self.seconds: list[float] = []

    @property
    def done(self) -> bool:
        return len(self.seconds) >= self.steps

    def add(self, shapes: list[Shape], seconds: float) -> None:
        """One optimizer step: the ``(batch size, padded length)`` of its micro-batches, its seconds."""
        self.shapes.append(list(shapes))
        self.seconds.append(seconds)

    def fit(self) -> BatchCost:
        return fit_batch_cost(self.shapes, self.seconds, share=self.share)


def cost_budget_batches(lengths: np.ndarray, cost: BatchCost, budget: float, rng: np.random.Generator, *,
                        cap: int | None = None, max_batch_size: int | None = None,
                        max_tokens: int | None = None) -> list[np.ndarray]:
    """Like ``token_budget_batches``, but each batch grows while its predicted ``cost`` stays within
    ``budget``, it holds at most ``max_batch_size`` sequences and at most ``max_tokens`` padded tokens
    (the memory budget). Short sequences cost less attention per token, so their batches hold more
    tokens. An item over the budget forms a batch of its own."""
    def fits(n: int, longest: int) -> bool:
        return (cost(n, longest) <= budget and (max_batch_size is None or n <= max_batch_size)
                and (max_tokens is None or n * longest <= max_tokens))
    return _greedy_batches(lengths, fits, rng, cap)


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
    pairs = float(sum(attention_pairs(len(p) - 1) for p in pieces))
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), num_tokens, pairs)


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
                    batch = replace(batch, inputs=batch.inputs.pin_memory(), targets=batch.targets.pin_memory())
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
