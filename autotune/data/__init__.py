"""Datasets a trial trains on: the built-in associative-recall task and real text files.

Owns: turning a task description into a dataset that yields ``Batch`` es (inputs, targets with
``IGNORE_INDEX`` where no loss is taken). Must not know about: the model, the training loop, Optuna.

Every dataset offers ``vocab_size``, ``seq_len``, ``train_batches()`` (endless) and ``val_batches()``
(a fixed list), and is deterministic given its seed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autotune.data.sizes import recall_sizes

if TYPE_CHECKING:
    from autotune.data.batching import BatchCost
    from autotune.data.synthetic import AssociativeRecall
    from autotune.data.text import TextFile

TASKS = ("mqar", "text")

# Imported on first use (PEP 562), so that ``autotune.data.sizes`` (the study-file checks) needs no torch.
_LAZY = {**dict.fromkeys(("IGNORE_INDEX", "PAD_TOKEN", "Batch", "BatchCost", "CostProbe", "collate", "cost_budget_batches",
                          "fit_batch_cost", "prefetch", "token_budget_batches"), "batching"),
         "AssociativeRecall": "synthetic",
         **dict.fromkeys(("TextFile", "load_tokens", "split_pieces"), "text")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"autotune.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'autotune.data' has no attribute {name!r}")

__all__ = ["IGNORE_INDEX", "PAD_TOKEN", "TASKS", "AssociativeRecall", "Batch", "BatchCost", "CostProbe", "TextFile",
           "build_dataset", "collate", "cost_budget_batches", "fit_batch_cost", "load_tokens", "prefetch",
           "recall_sizes", "split_pieces", "token_budget_batches"]


def build_dataset(task: str, *, seq_len: int, batch_size: int, seed: int = 0, eval_batches: int = 4,
                  num_pairs: int = 8, num_queries: int | None = None, task_vocab: int | None = None, data_path: str | None = None,
                  tokens_per_batch: int | None = None, eot_token: int | None = None,
                  val_fraction: float = 0.1, batch_cost: BatchCost | None = None,
                  max_batch_size: int | None = None) -> AssociativeRecall | TextFile:
    """The dataset for ``task``: ``mqar`` (fixed ``batch_size``) or ``text`` (token budget).

    For ``text``, ``tokens_per_batch`` defaults to ``batch_size * seq_len`` and ``task_vocab``
    (if given) overrides the vocabulary size read from the file; ``batch_cost`` (text only) batches
    by predicted cost, at most ``max_batch_size`` pieces a batch (see ``TextFile``).
    """
    from autotune.data.synthetic import AssociativeRecall
    from autotune.data.text import TextFile
    if task == "mqar":
        return AssociativeRecall(seq_len=seq_len, num_pairs=num_pairs, num_queries=num_queries,
                                 vocab_size=task_vocab or 64, batch_size=batch_size, seed=seed, eval_batches=eval_batches)
    if task == "text":
        if not data_path:
            raise ValueError("task 'text' needs data_path (a .txt or .bin file)")
        return TextFile(data_path, seq_len=seq_len, tokens_per_batch=tokens_per_batch or batch_size * seq_len,
                        seed=seed, eot_token=eot_token, val_fraction=val_fraction,
                        eval_batches=eval_batches, vocab_size=task_vocab, batch_cost=batch_cost,
                        max_batch_size=max_batch_size)
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
