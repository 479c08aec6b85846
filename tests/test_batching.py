import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structsent.batching import batch_cost, pack_batch, pad_batch, padded_cost, padding_fraction, plan_batches

lengths_strategy = st.lists(st.integers(min_value=1, max_value=600), max_size=300)


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_strategy, budget=st.integers(1, 5000), cap=st.integers(1, 80),
       overhead=st.one_of(st.none(), st.integers(0, 200)))
def test_plan_covers_every_index_once_within_limits(lengths, budget, cap, overhead):
    batches = plan_batches(lengths, token_budget=budget, max_batch_size=cap, batch_overhead=overhead)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= cap
        # Only a lone sequence longer than the budget may exceed it.
        assert padded_cost(batch, lengths) <= budget or len(batch) == 1
        # Longest first inside a batch, so the first element sets the padded width.
        assert lengths[batch[0]] == max(lengths[i] for i in batch)


def waste(batches, lengths) -> float:
    """The padding share of running ``batches``."""
    return padding_fraction(sum(lengths[i] for b in batches for i in b), sum(padded_cost(b, lengths) for b in batches))


def test_padding_fraction_is_the_padded_share():
    assert padding_fraction(30, 40) == 0.25
    assert padding_fraction(40, 40) == 0.0
    assert padding_fraction(0, 0) == 0.0  # nothing ran: no waste, not a division by zero


def test_sorting_reduces_padding_against_input_order():
    lengths = [10, 500, 12, 480, 15, 470, 11, 490] * 8
    planned = plan_batches(lengths, token_budget=4096, max_batch_size=64)
    in_order = [tuple(range(i, min(i + 8, len(lengths)))) for i in range(0, len(lengths), 8)]
    assert waste(planned, lengths) < 0.05
    assert waste(in_order, lengths) > 0.4


def test_plan_is_deterministic_and_longest_first():
    assert plan_batches([5, 3, 9, 4], token_budget=12, max_batch_size=8) == [(2,), (0, 3), (1,)]
    assert plan_batches([3, 3, 3], token_budget=100, max_batch_size=2) == [(0, 1), (2,)]
    assert plan_batches([], token_budget=10, max_batch_size=2) == []


def test_pad_batch_right_pads_with_mask():
    ids, mask = pad_batch([[101, 5, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def _pad_row_by_row(sequences, pad_id, width):
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


@given(st.lists(st.lists(st.integers(0, 21127), min_size=1, max_size=40), min_size=1, max_size=12),
       st.integers(0, 50), st.sampled_from([0, 1, 100]), st.sampled_from([tuple, list, np.array]))
def test_pad_batch_equals_padding_row_by_row(sequences, extra_width, pad_id, kind):
    width = max(map(len, sequences)) + extra_width
    ids, mask = pad_batch([kind(s) for s in sequences], pad_id, width)
    want_ids, want_mask = _pad_row_by_row(sequences, pad_id, width)
    assert ids.dtype == mask.dtype == np.int64
    assert np.array_equal(ids, want_ids) and np.array_equal(mask, want_mask)


def test_pad_batch_is_never_narrower_than_its_longest_sequence():
    ids, mask = pad_batch([(1, 2, 3, 4)], pad_id=0, width=2)
    assert ids.tolist() == [[1, 2, 3, 4]] and mask.tolist() == [[1, 1, 1, 1]]


def _total_cost(batches, lengths, overhead):
    return sum(overhead + padded_cost(b, lengths) for b in batches)


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _set_partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1 :]]


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=7), overhead=st.integers(0, 80),
       cap=st.integers(1, 7), budget=st.integers(60, 400))
def test_cost_aware_plan_is_the_cheapest_of_all_partitions(lengths, overhead, cap, budget):
    """Against brute force over every set partition that respects the budget and the cap."""
    planned = plan_batches(lengths, token_budget=budget, max_batch_size=cap, batch_overhead=overhead)
    feasible = [
        cost for cost, partition in (
            (_total_cost([tuple(b) for b in p], lengths, overhead), p) for p in _set_partitions(list(range(len(lengths))))
        )
        if all(len(b) <= cap and padded_cost(tuple(b), lengths) <= budget for b in partition)
    ]
    assert _total_cost(planned, lengths, overhead) == min(feasible)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_strategy, overhead=st.integers(0, 200))
def test_cost_aware_plan_never_costs_more_than_the_greedy_one(lengths, overhead):
    greedy = plan_batches(lengths, token_budget=4096, max_batch_size=64)
    cheapest = plan_batches(lengths, token_budget=4096, max_batch_size=64, batch_overhead=overhead)
    assert _total_cost(cheapest, lengths, overhead) <= _total_cost(greedy, lengths, overhead)


def test_cost_aware_plan_cuts_where_a_long_text_would_pad_short_ones():
    lengths = [300, 290, 60, 50, 20, 10, 10, 9]
    assert plan_batches(lengths, token_budget=4096, max_batch_size=64) == [tuple(range(8))]
    cheap = plan_batches(lengths, token_budget=4096, max_batch_size=64, batch_overhead=16)
    assert cheap == [(0, 1), (2, 3), (4,), (5, 6, 7)]
    assert waste(cheap, lengths) < 0.05 < waste([tuple(range(8))], lengths)
    # A large overhead packs batches as full as the budget allows, like the greedy plan.
    assert plan_batches(lengths, token_budget=4096, max_batch_size=64, batch_overhead=10**9) == [tuple(range(8))]


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_strategy, budget=st.integers(1, 5000), cap=st.integers(1, 80))
def test_a_packed_plan_fills_batches_to_the_budget_in_real_tokens(lengths, budget, cap):
    batches = plan_batches(lengths, token_budget=budget, max_batch_size=cap, batch_overhead=32, packed=True)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert flat == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # longest first, ties in input order
    for batch, following in zip(batches, [*batches[1:], None]):
        assert 1 <= len(batch) <= cap
        assert batch_cost(batch, lengths, packed=True) <= budget or len(batch) == 1
        if following is not None and len(batch) < cap:  # cut only where the next text would not fit
            assert batch_cost(batch, lengths, packed=True) + lengths[following[0]] > budget


def test_a_packed_plan_makes_one_call_where_padding_would_cut_several():
    lengths = [400, 12, 30, 9, 25, 60, 8]  # one long review among short ones: padded, it would pad them all
    padded = plan_batches(lengths, token_budget=4096, max_batch_size=64, batch_overhead=32)
    assert len(padded) > 1
    assert plan_batches(lengths, token_budget=4096, max_batch_size=64, batch_overhead=32, packed=True) == [
        (0, 5, 2, 4, 1, 3, 6)]
    assert batch_cost((0, 1), lengths, packed=True) == 412 and batch_cost((0, 1), lengths, packed=False) == 800
    with pytest.raises(ValueError, match="packed batches have no padded lengths"):
        plan_batches(lengths, token_budget=4096, max_batch_size=64, packed=True, uniform=True)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=10), st.integers(0, 8))
def test_pack_batch_holds_every_real_token_text_after_text(lengths, extra_width):
    rng = np.random.default_rng(len(lengths))
    sequences = [rng.integers(1, 1000, size=n) for n in lengths]
    ids, mask = pad_batch(sequences, pad_id=0, width=max(lengths) + extra_width)
    packed = pack_batch(ids, mask)
    assert packed is not None
    flat, positions, cumulative, longest = packed
    assert cumulative.dtype == np.int32 and cumulative.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert longest == max(lengths)
    for i, seq in enumerate(sequences):
        a, b = cumulative[i], cumulative[i + 1]
        assert flat[a:b].tolist() == seq.tolist() and positions[a:b].tolist() == list(range(len(seq)))


def test_pack_batch_refuses_what_is_not_plain_right_padding():
    ids = np.array([[5, 6, 7], [8, 9, 0]])
    assert pack_batch(ids, np.array([[1, 1, 1], [1, 1, 0]])) is not None
    assert pack_batch(ids, np.array([[1, 0, 1], [1, 1, 0]])) is None  # a hole
    assert pack_batch(ids, np.array([[0, 1, 1], [1, 1, 0]])) is None  # left padding
    assert pack_batch(ids, np.array([[1, 1, 1], [0, 0, 0]])) is None  # an empty row
    assert pack_batch(np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)) is None
