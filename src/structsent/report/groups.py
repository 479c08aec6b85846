"""The groups of ``--by``: which rows are one group (the exact value) and the name the page shows.

A group is the column's exact value: ``"a"``, ``" a"`` and ``"a  "`` are three groups, and
``"   "`` is not the empty group. Memory stays bounded whatever the values' length: a group's key
holds at most ``KEPT_CHARS`` characters of its value, and a longer value is told apart by the
SHA-256 of its whole text. Only the name shown is ever shortened, and no two groups are shown
alike. A value is shown as written when that is unambiguous; otherwise it is quoted as JSON
writes it (whitespace and invisible characters escaped), so a value never looks like another,
nor like ``(empty)`` or ``(other)``, the rows the report adds (no value is shown as written that
starts with a parenthesis):

>>> [shown_name(group_value(v)) for v in ("a", " a", "a  ", "   ", "", "other", "(other)", "a\\tb")]
['a', '" a"', '"a  "', '"   "', '(empty)', 'other', '"(other)"', '"a\\\\tb"']
>>> [shown_name(group_value(v)) for v in ("caf\u00e9", "cafe\u0301", "A\u3164")]
['café', '"cafe\\\\u0301"', '"A\\\\u3164"']
>>> shown_name(group_value("长" * 201))[-44:]
'… (201 characters, SHA-256 8734e390efb806e4)'
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Collection
from typing import NamedTuple

EMPTY_ROW = "(empty)"  # the group of rows whose value is missing or empty
OTHER_ROW = "(other)"  # the groups past those listed, added up
UNREADABLE_ROW = "(unreadable)"  # the group of records the report could not read (their value is not known)
KEPT_CHARS = 200  # characters of a value a group's key holds, and the page shows
DIGEST_SHOWN = 16  # hex digits of a long value's SHA-256 the page shows
_MARKS = ('"', "(")  # a value shown as written never starts with these: quoted values and added rows do


class GroupValue(NamedTuple):
    """A group's key: equal exactly when the values are (a value longer than KEPT_CHARS characters:
    when the SHA-256 of its text is), and of bounded size whatever the value's."""

    head: str  # the value's text, whole up to KEPT_CHARS characters, else its first KEPT_CHARS
    length: int  # characters of the whole text
    digest: str  # hex SHA-256 of the whole text when longer than KEPT_CHARS, else ""
    text: bool  # a text (or none), not a number, boolean or JSON value: 1 and "1" are two groups

    @property
    def empty(self) -> bool:
        return self.length == 0

    @property
    def unreadable(self) -> bool:
        """The key of records that could not be read (a malformed CSV record, a JSON Lines line that
        is no object): their value is not known, so they are not counted as empty."""
        return self.length < 0


UNREADABLE_KEY = GroupValue("", -1, "", True)


def group_value(value: object) -> GroupValue:
    """The key of the group ``value`` belongs to (None and "" are both the empty group;
    UNREADABLE_KEY, a record's that could not be read, is its own)."""
    if value is UNREADABLE_KEY:
        return UNREADABLE_KEY
    text = value_text(value)
    if len(text) <= KEPT_CHARS:
        return GroupValue(text, len(text), "", is_text(value))
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return GroupValue(text[:KEPT_CHARS], len(text), digest, is_text(value))


def value_text(value: object) -> str:
    """A value's whole text: a text as it is, JSON values as JSON writes them, others as str()."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, bool)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes):  # a Parquet BINARY value: its text
        return value.decode("utf-8", "replace")
    return str(value)  # numbers, dates, decimals: their own text


def is_text(value: object) -> bool:
    """Whether a --by value is a text (or none): JSON Lines may hold 1 and "1" in one column."""
    return value is None or isinstance(value, (str, bytes))


def shown_name(value: GroupValue, taken: Collection[str] = ()) -> str:
    """The group's name on the page. ``taken``: the names of the values that are not texts, which
    a text is not shown as (JSON Lines' 1 and "1": the text is quoted)."""
    if value.empty:
        return EMPTY_ROW
    if value.unreadable:
        return UNREADABLE_ROW
    if not value.text:
        return _shortened(_visible(value.head), value)
    if not value.digest and _as_written(value.head) and value.head not in taken:
        return value.head
    return _shortened(_quoted(value.head), value)


def names_of_values(values: Collection[GroupValue]) -> set[str]:
    """The names of those ``values`` that are not texts: the ``taken`` of ``shown_name``."""
    return {shown_name(value) for value in values if not value.text}


def _as_written(text: str) -> bool:
    """Whether a text reads unambiguously as itself: printable, single spaces between words, in
    its composed (NFC) form, without a character that shows as nothing, and not starting like a
    quoted value or a row the report adds."""
    return (text.isprintable() and text.strip(" ") == text and "  " not in text and not text.startswith(_MARKS)
            and unicodedata.is_normalized("NFC", text) and not any(map(_shows_as_nothing, text)))


# Printable characters that show as nothing, or as a blank: Hangul fillers, the combining grapheme
# joiner, Khmer inherent vowels, Mongolian and Unicode variation selectors, the blank Braille pattern.
_NOTHING_SHOWN = frozenset("\u115f\u1160\u3164\uffa0\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800")


def _shows_as_nothing(char: str) -> bool:
    return char in _NOTHING_SHOWN or "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef"


def _quoted(text: str) -> str:
    """The text as a JSON string, with every character that does not show escaped too."""
    return _visible(json.dumps(text, ensure_ascii=False))


def _visible(text: str) -> str:
    """``text`` with each character that does not print (whitespace but the space, controls,
    format characters, lone surrogates) or shows as nothing written as JSON escapes it, and in a
    text not in its composed (NFC) form its combining marks too: "café" composed and "cafe" with a
    combining accent show alike as written."""
    composed = unicodedata.is_normalized("NFC", text)
    if text.isprintable() and composed and not any(map(_shows_as_nothing, text)):
        return text
    return "".join(_escaped(char) if not char.isprintable() or _shows_as_nothing(char)
                   or (not composed and unicodedata.combining(char)) else char for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # as JSON writes a character past the BMP: a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _shortened(name: str, value: GroupValue) -> str:
    """A long value's name: its first KEPT_CHARS characters, then its length and a SHA-256 prefix,
    so two long values that start alike are still shown apart."""
    if not value.digest:
        return name
    return f"{name}… ({value.length:,} characters, SHA-256 {value.digest[:DIGEST_SHOWN]})"
