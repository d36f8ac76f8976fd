"""Whether the built-in recall task can exist at given sizes, without building it (and without torch).

Owns: ``recall_sizes``, the one place the task's size rules live; ``AssociativeRecall`` builds from it
and the study-file checks call it, so that a task that cannot exist fails at ``autotune validate``.
"""
from __future__ import annotations


def recall_sizes(*, seq_len: int, num_pairs: int, vocab_size: int,
                 num_queries: int | None = None) -> tuple[int, int, int]:
    """``(num_keys, num_queries, num_slots)`` of an associative-recall sequence, or ValueError.

    Keys are ``1..num_keys`` with ``num_keys = (vocab_size - 1) // 2`` (a sequence's keys are
    distinct); queries sit in 2-token slots after the ``num_pairs`` pairs."""
    num_keys = (vocab_size - 1) // 2
    if num_pairs < 1 or num_keys < num_pairs:
        raise ValueError(f"num_pairs={num_pairs} needs 1 <= num_pairs <= (vocab_size - 1) // 2 "
                         f"= {num_keys}; raise task_vocab or lower num_pairs")
    num_queries = num_pairs if num_queries is None else num_queries
    num_slots = (seq_len + 1 - 2 * num_pairs) // 2
    if not num_pairs <= num_queries <= num_slots:
        raise ValueError(f"seq_len={seq_len} with num_pairs={num_pairs} holds {num_pairs} to "
                         f"{max(num_slots, 0)} queries, not num_queries={num_queries}")
    return num_keys, num_queries, num_slots
