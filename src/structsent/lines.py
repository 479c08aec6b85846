"""What the command line prints about a name: one line, nothing a terminal would act on.

A file name may hold a line break (an error is one line of standard error) or an escape sequence
(ESC [31m recoloured the terminal; a form feed cleared it): control characters are written as
escapes (\\n, \\r, \\x1b), so the name shown is the name, and a space is never put in their place
(that would name another file). A name's bytes that are not UTF-8 (os.fsdecode gives each as a
character U+DC80..U+DCFF) are written as the byte, \\xff, so that the line is valid UTF-8. The
bidirectional controls (a right-to-left override showed the rest of a name reversed) are written
as \\u202e.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 and C1 controls and DEL; a tab stays a tab
# Those, and the surrogateescape characters of bytes that are not UTF-8 (printed raw, they are no
# UTF-8: a stream that refuses them fails, one that replaces them shows "\udcff" for the byte 0xff).
# And the bidirectional controls (a right-to-left override shows the rest of the line reversed:
# "evil\u202ecod.exe" reads as "evilexe.doc"), written as \u202e.
_ESCAPED = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\udc80-\udcff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
_SURROGATE_ESCAPE = 0xDC00  # U+DC80..U+DCFF: the byte 0x80..0xFF


def one_line(text: str) -> str:
    """``text`` with its control characters, its bidirectional controls, and the bytes it holds that
    are not UTF-8, written as escapes."""
    return _ESCAPED.sub(lambda m: _NAMED.get(m.group(), _escape(m.group())), text)


def _escape(character: str) -> str:
    code = _byte_or_code_point(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _byte_or_code_point(character: str) -> int:
    code = ord(character)
    return code - _SURROGATE_ESCAPE if code >= _SURROGATE_ESCAPE else code


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (``one_line`` writes each as an escape)."""
    return _CONTROL.search(text) is not None


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: no lone surrogate, such as a byte of a name that
    is not UTF-8 (os.fsdecode's U+DC80..U+DCFF). Native libraries that take paths as UTF-8 text
    (ONNX Runtime) cannot open the others, and no output (CSV, JSON) can write them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def why_unprintable(name: str) -> str | None:
    """Why ``name`` (a label, a column prefix) cannot be shown as it is: blank, or holding a
    character that does not print (a control character or a tab, a line or paragraph separator, a format character such as a
    zero-width space or a right-to-left override, a space other than ' '); None when it prints."""
    if not name.strip():
        return "is blank"
    odd = next((c for c in name if not c.isprintable()), None)
    if odd is None:
        return None
    kind = "a control character" if has_control_characters(odd) or odd == "\t" else "a character that does not print"
    return f"holds {kind} (U+{ord(odd):04X})"


def rows_in_words(count: int) -> str:
    """``count`` rows in words: "1 row", "0 rows", "1,000 rows" (a one-row job said "1 rows").

    >>> rows_in_words(1), rows_in_words(1000)
    ('1 row', '1,000 rows')
    """
    return f"{count:,} row" if count == 1 else f"{count:,} rows"
