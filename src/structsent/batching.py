"""Batch planning: pure functions, no model and no I/O.

Texts are sorted by token length (longest first, so the memory peak comes first) and cut into
batches whose padded cost, longest x count, stays within a token budget, with a cap on the
count: greedily (GPUs), or where total cost including a per-call overhead is least (CPUs).
A batch is a tuple of input positions, so its results go back to those positions.

>>> plan_batches([5, 3, 9, 4], token_budget=12, max_batch_size=8)
[(2,), (0, 3), (1,)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Batch = tuple[int, ...]


def plan_batches(
    lengths: Sequence[int], *, token_budget: int, max_batch_size: int, batch_overhead: int | None = None,
    uniform: bool = False, packed: bool = False,
) -> list[Batch]:
    """Group indices of ``lengths`` into batches, longest first.

    Every index appears in exactly one batch. A batch's padded cost (its longest length times
    its count) is at most ``token_budget``, except a single sequence longer than the budget,
    which goes alone. Ties keep input order, so the plan is deterministic.

    ``batch_overhead`` None: fill each batch greedily up to the budget (devices where a call
    costs much, GPUs). An integer: the fixed cost of one model call in tokens' worth of
    compute; the plan then minimises total cost, sum(batch_overhead + longest x count), which
    cuts the sorted texts where a long one would pad many short ones (CPUs, where a call costs
    little and every padded token costs as much as a real one).

    ``uniform``: every batch holds texts of one length only (lengths already rounded up with
    ``padded_length``), so that a text is padded the same way whatever else is in its call.

    ``packed``: the runner computes no padding (packed attention), so a batch costs the sum of
    its lengths: batches are filled greedily to the budget in real tokens (fewer, larger calls
    at no padding cost). ``batch_overhead`` then plays no part.
    """
    if token_budget < 1 or max_batch_size < 1:
        raise ValueError("token_budget and max_batch_size must be positive")
    if packed and uniform:
        raise ValueError("packed batches have no padded lengths to make uniform")
    if batch_overhead is not None and batch_overhead < 0:
        raise ValueError("batch_overhead must be >= 0")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    descending = [lengths[i] for i in order]
    if packed:
        sizes = _greedy_sizes(descending, token_budget, max_batch_size, packed=True)
    elif uniform:
        sizes = _uniform_sizes(descending, token_budget, max_batch_size)
    elif batch_overhead is None:
        sizes = _greedy_sizes(descending, token_budget, max_batch_size)
    else:
        sizes = _cheapest_sizes(descending, token_budget, max_batch_size, batch_overhead)
    batches: list[Batch] = []
    start = 0
    for size in sizes:
        batches.append(tuple(order[start : start + size]))
        start += size
    return batches


def _uniform_sizes(descending: list[int], token_budget: int, max_batch_size: int) -> list[int]:
    """Greedy cuts that also cut wherever the length changes (equal lengths: greedy is cheapest)."""
    sizes: list[int] = []
    start = 0
    for end in range(1, len(descending) + 1):
        if end == len(descending) or descending[end] != descending[start]:
            sizes += _greedy_sizes(descending[start:end], token_budget, max_batch_size)
            start = end
    return sizes


def padded_length(length: int, multiple: int, ceiling: int) -> int:
    """``length`` rounded up to a multiple of ``multiple``, at most ``ceiling`` (never below ``length``).

    >>> padded_length(13, 8, 512), padded_length(16, 8, 512), padded_length(510, 8, 511)
    (16, 16, 511)
    """
    return max(length, min(-(-length // multiple) * multiple, ceiling))


def _greedy_sizes(descending: list[int], token_budget: int, max_batch_size: int, *, packed: bool = False) -> list[int]:
    """Cuts where the next text would take the batch past the budget: its padded cost (its first
    text is its longest), or with ``packed`` its real tokens."""
    sizes: list[int] = []
    count, longest, tokens = 0, 0, 0
    for length in descending:
        cost = tokens + length if packed else longest * (count + 1)
        if count and (count >= max_batch_size or cost > token_budget):
            sizes.append(count)
            count, tokens = 0, 0
        if not count:
            longest = length
        count += 1
        tokens += length
    if count:
        sizes.append(count)
    return sizes


def _cheapest_sizes(descending: list[int], token_budget: int, max_batch_size: int, overhead: int) -> list[int]:
    """Batch sizes of the cheapest split of ``descending`` into consecutive runs (dynamic programming).

    best[i] is the least cost of the texts from i on; a batch starting at i holds m texts and
    costs overhead + descending[i] * m (its first text is its longest).
    """
    n = len(descending)
    best = np.zeros(n + 1)
    take = np.ones(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        longest = descending[i]
        limit = max(1, min(max_batch_size, n - i, token_budget // max(longest, 1)))
        counts = np.arange(1, limit + 1)
        costs = overhead + longest * counts + best[i + 1 : i + limit + 1]
        m = limit - int(np.argmin(costs[::-1]))  # on a tie, the larger batch
        take[i] = m
        best[i] = costs[m - 1]
    sizes: list[int] = []
    i = 0
    while i < n:
        sizes.append(int(take[i]))
        i += int(take[i])
    return sizes


def padded_cost(batch: Batch, lengths: Sequence[int]) -> int:
    return max(lengths[i] for i in batch) * len(batch) if batch else 0


def batch_cost(batch: Batch, lengths: Sequence[int], *, packed: bool) -> int:
    """Token positions a model call computes for ``batch``: the real ones when packed, else padded."""
    return sum(lengths[i] for i in batch) if packed else padded_cost(batch, lengths)


def padding_fraction(real_tokens: int, padded_tokens: int) -> float:
    """Share of computed token positions that are padding (0.0 = no waste, 0.0 when nothing ran)."""
    return 0.0 if not padded_tokens else 1.0 - real_tokens / padded_tokens


def pad_batch(
    sequences: Sequence[Sequence[int] | np.ndarray], pad_id: int = 0, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id sequences into (input_ids, attention_mask), both int64, ``width`` wide at least.

    One copy per row: from an int64 array (the vectorised tokenizer's) that is a memory copy;
    a tuple of Python ints costs ~40 ns per id, which is why the encoder hands over arrays.
    """
    lengths = [len(s) for s in sequences]
    width = max(width or 0, *lengths) if lengths else (width or 0)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    real = np.arange(width) < np.asarray(lengths, dtype=np.int64)[:, None]
    for row, seq in enumerate(sequences):
        ids[row, : lengths[row]] = seq
    return ids, real.astype(np.int64)


def pack_batch(input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """A right-padded batch as one token stream: (ids, positions, cumulative lengths, longest).

    ``ids`` and ``positions`` hold every real token, text after text; ``cumulative lengths``
    (int32, one more than texts) say where each text starts. None when the mask is not plain
    right padding or a row is empty: such a batch is run padded.
    """
    lengths = attention_mask.sum(axis=1)
    width = input_ids.shape[1]
    real = np.arange(width) < lengths[:, None]
    if len(lengths) == 0 or not lengths.all() or not np.array_equal(real, attention_mask != 0):
        return None
    cumulative = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cumulative[1:])
    positions = np.broadcast_to(np.arange(width, dtype=np.int64), input_ids.shape)[real]
    return input_ids[real].astype(np.int64, copy=False), positions, cumulative, int(lengths.max())
