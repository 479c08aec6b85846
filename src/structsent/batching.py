"""Batch planning: pure functions, no model and no I/O.

Texts are sorted by token length (longest first, so the memory peak comes first) and cut into
batches whose padded cost, longest x count, stays within a token budget, with a cap on the
count. Results are put back in input order with ``restore_order``.

>>> plan_batches([5, 3, 9, 4], token_budget=12, max_batch_size=8)
[(2,), (0, 3), (1,)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

Batch = tuple[int, ...]


def plan_batches(lengths: Sequence[int], *, token_budget: int, max_batch_size: int) -> list[Batch]:
    """Group indices of ``lengths`` into batches, longest first.

    Every index appears in exactly one batch. A batch's padded cost (its longest length times
    its count) is at most ``token_budget``, except a single sequence longer than the budget,
    which goes alone. Ties keep input order, so the plan is deterministic.
    """
    if token_budget < 1 or max_batch_size < 1:
        raise ValueError("token_budget and max_batch_size must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[Batch] = []
    current: list[int] = []
    longest = 0
    for index in order:
        if current and (len(current) >= max_batch_size or longest * (len(current) + 1) > token_budget):
            batches.append(tuple(current))
            current = []
        if not current:
            longest = lengths[index]
        current.append(index)
    if current:
        batches.append(tuple(current))
    return batches


def restore_order(batches: Sequence[Batch], batch_results: Sequence[Sequence[T]]) -> list[T]:
    """Scatter per-batch results back to the input positions the plan took them from."""
    total = sum(len(b) for b in batches)
    out: list = [None] * total
    filled = 0
    for batch, results in zip(batches, batch_results, strict=True):
        if len(batch) != len(results):
            raise ValueError(f"batch of {len(batch)} got {len(results)} results")
        for index, result in zip(batch, results):
            out[index] = result
        filled += len(batch)
    if filled != total:
        raise ValueError("batches and results do not cover every input")
    return out


def padded_cost(batch: Batch, lengths: Sequence[int]) -> int:
    return max(lengths[i] for i in batch) * len(batch) if batch else 0


def padding_fraction(batches: Sequence[Batch], lengths: Sequence[int]) -> float:
    """Share of computed token positions that are padding (0.0 = no waste)."""
    padded = sum(padded_cost(b, lengths) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if padded == 0 else 1.0 - real / padded


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id sequences into (input_ids, attention_mask), both int64."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
