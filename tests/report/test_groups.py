"""Group keys and the names the page shows: exact values, bounded keys, no two groups shown alike."""

import decimal
import itertools

from structsent.report.groups import (
    EMPTY_ROW,
    KEPT_CHARS,
    OTHER_ROW,
    group_value,
    names_of_values,
    shown_name,
)

# Values that look alike, or like a name another value or a row the report adds is shown by.
LOOK_ALIKES = ["a", " a", "a ", "a  ", "\ta", "a\n", "a\u00a0", "a\u3000", "a\u200b", "a\U000e0001", "a b", "a  b",
               "a\tb", "   ", "\n", "other", "(other)", "(empty)", '"a"', '" a"', "\\u0020a", "a\\n", "\ud800",
               "1", "true", "长" * KEPT_CHARS, "长" * KEPT_CHARS + "x", "长" * KEPT_CHARS + "y", "长" * 999,
               "caf\u00e9", "cafe\u0301", "e\u0301\u0327", "e\u0327\u0301", "A", "A\u3164", "A\ufe0f", "A\u2800"]
NOT_TEXTS = [1, True, decimal.Decimal("1.50"), {"a": 1}, ["a"], {"a": "长" * 300}, {"a": "长" * 300 + "x"}]


def test_no_two_values_share_a_key_or_a_name():
    values = [*LOOK_ALIKES, *NOT_TEXTS]
    keys = [group_value(value) for value in values]
    assert len(set(keys)) == len(values)
    taken = names_of_values(keys)
    names = [shown_name(key, taken) for key in keys]
    assert len(set(names)) == len(names)
    assert not {EMPTY_ROW, OTHER_ROW} & set(names)


def test_missing_and_empty_values_are_the_empty_group_and_nothing_else_is():
    assert group_value(None) == group_value("") == group_value(b"")
    assert shown_name(group_value(None)) == EMPTY_ROW
    assert all(not group_value(value).empty for value in ("   ", "\n", "\u200b", 0, False))


def test_a_plain_value_is_shown_as_written_and_others_quoted_with_what_does_not_show_escaped():
    assert [shown_name(group_value(v)) for v in ("外卖 店", "a\u00a0", "a\u200b", "a\U000e0001", "a\tb")] == [
        "外卖 店", '"a\\u00a0"', '"a\\u200b"', '"a\\udb40\\udc01"', '"a\\tb"']


def test_texts_that_render_alike_are_not_both_shown_as_written():
    """Composed and decomposed "café", "A" and "A" with a Hangul filler were shown alike, as written."""
    assert [shown_name(group_value(v)) for v in ("caf\u00e9", "cafe\u0301", "A\u3164", "A\ufe0f", "ไทย", "नमस्ते")] == [
        "caf\u00e9", '"cafe\\u0301"', '"A\\u3164"', '"A\\ufe0f"', "ไทย", "नमस्ते"]  # composed marks stay as written
    rendered = {shown_name(group_value(v)) for v in ("e\u0301\u0327", "e\u0327\u0301")}
    assert rendered == {'"e\\u0301\\u0327"', '"e\\u0327\\u0301"'}  # two orders of one mark pair: both escaped


def test_a_text_named_like_a_value_that_is_not_a_text_is_quoted():
    taken = names_of_values([group_value(1), group_value(True)])
    assert [shown_name(group_value(v), taken) for v in (1, "1", True, "true", "x")] == ["1", '"1"', "true", '"true"', "x"]


def test_keys_are_bounded_and_only_long_names_are_shortened():
    for a, b in itertools.combinations(["长" * 100_000 + "x", "长" * 100_000 + "y", "长" * 100_001], 2):
        assert group_value(a) != group_value(b) and shown_name(group_value(a)) != shown_name(group_value(b))
    key = group_value("长" * 100_000)
    assert len(key.head) == KEPT_CHARS and len(key.digest) == 64
    assert shown_name(key).startswith('"' + "长" * KEPT_CHARS + '"… (100,000 characters, SHA-256 ')
    assert shown_name(group_value("长" * KEPT_CHARS)) == "长" * KEPT_CHARS  # not cut at the limit itself
