"""Signs that a text file is read as what it is not: UTF-16 read as UTF-8, a semicolon- or
tab-separated file read as CSV. Read so, it gives rows of noise or whole lines as one column,
labelled without a word; the label job and the report both refuse it with what to do.

>>> check_header(["id", "text"], ",", "in.csv")  # a header of its own delimiter passes
>>> check_header(["id\\ttext"], ",", "in.csv")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
structsent.errors.BadInputError: in.csv: the header is one column holding tabs: not CSV; pass --format tsv (...)
"""

from __future__ import annotations

import re

from ..errors import BadInputError

UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
UTF32_MARKS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
HEAD_BYTES = 4096  # what ``check_not_utf16`` is given of a file: its first bytes
_DELIMITERS = {",": ("commas", "CSV"), "\t": ("tabs", "TSV"), ";": ("semicolons", None)}
_EXCEL_HINT = re.compile(r"sep=(.)")  # Excel's first line naming the delimiter, which no reader but Excel reads


def check_not_utf16(head: bytes, name: str) -> None:
    r"""Refuse UTF-16 (or UTF-32) text. ``head``: the file's first bytes (HEAD_BYTES of them, fewer
    where it is shorter or a stream holds fewer yet). Without a byte-order mark such text holds NUL
    bytes (ASCII characters, line breaks) beside bytes UTF-8 cannot hold, or, in ASCII text, a NUL
    every other byte; UTF-8 text holds a NUL rarely (it is labelled then, as any character).

    >>> check_not_utf16("第一行\x00有NUL\n".encode(), "in.txt")  # UTF-8 with a NUL: text
    >>> check_not_utf16("上海很好\n差\n".encode("utf-16-le"), "in.txt")
    Traceback (most recent call last):
    ...
    structsent.errors.BadInputError: in.txt: not UTF-8 text (NUL bytes among bytes UTF-8 cannot hold, ...
    """
    if head.startswith(UTF32_MARKS):
        raise BadInputError(f"{name}: not UTF-8 text (UTF-32, by its byte-order mark); save it as UTF-8")
    if head.startswith(UTF16_MARKS):
        raise BadInputError(f'{name}: not UTF-8 text (UTF-16, as Excel\'s "Unicode text" saves it); '
                            'save it as UTF-8 (in Excel: "CSV UTF-8")')
    nuls = head.count(0)
    if nuls and not _utf8_so_far(head) and not _reads_as_wide_text(head):
        raise BadInputError(f"{name}: not text ({nuls:,} NUL bytes in its first {len(head):,} bytes, which read "
                            "neither as UTF-8 nor as UTF-16 or UTF-32 text): a binary file?")
    if nuls and 4 * nuls >= len(head):
        raise BadInputError(f"{name}: not UTF-8 text (NUL bytes between most characters, as UTF-16 or UTF-32 text "
                            "has); save it as UTF-8")
    if nuls and not _utf8_so_far(head):
        raise BadInputError(f"{name}: not UTF-8 text (NUL bytes among bytes UTF-8 cannot hold, as UTF-16 text "
                            "without a byte-order mark has); save it as UTF-8")


def _reads_as_wide_text(head: bytes) -> bool:
    """Whether ``head`` reads as UTF-16 or UTF-32 text (either byte order, a character cut at its
    end allowed), nearly all of it printable or white space: what a NUL-filled head that is no
    UTF-8 is when it is text at all (a program or an image is not)."""
    for encoding, width in (("utf-16-le", 2), ("utf-16-be", 2), ("utf-32-le", 4), ("utf-32-be", 4)):
        whole = head[: len(head) - len(head) % width]
        try:
            text = whole.decode(encoding)
        except UnicodeDecodeError as err:
            if err.end < len(whole) - 2 * width:  # (not only a surrogate pair cut at the end)
                continue
            text = whole[: err.start].decode(encoding)
        if text and sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
            return True
    return False


def _utf8_so_far(head: bytes) -> bool:
    """Whether ``head`` is UTF-8, allowing a character cut at its end."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.reason == "unexpected end of data" and err.end == len(head)
    return True


def check_header(header: list[str], delimiter: str, name: str, text_column: str | None = None) -> None:
    """Refuse a CSV/TSV header read with the wrong delimiter: one column holding another delimiter,
    or Excel's ``sep=X`` hint line. A ``text_column`` among the header's names (a one-column file
    whose name holds a semicolon, named with --text-column) is the user's word that it is right."""
    if text_column is not None and text_column in header:
        return
    own_format = _DELIMITERS[delimiter][1]
    line = delimiter.join(header)
    hint = _EXCEL_HINT.fullmatch(line)
    if hint is not None:
        advice = "" if hint[1] == delimiter else f", then {_advice(hint[1])}"
        raise BadInputError(f"{name}: line 1 is {line!r}, Excel's delimiter hint, not a header; delete that "
                            f"line{advice}")
    if len(header) != 1:
        return
    seen = next((other for other in _DELIMITERS if other != delimiter and other in header[0]), None)
    if seen is not None:
        raise BadInputError(f"{name}: the header is one column holding {_DELIMITERS[seen][0]}: not {own_format}; "
                            f"{_advice(seen, delimiter)} (a file of one column so named: pass --text-column "
                            "with its name)")


def _advice(delimiter: str, read_with: str = ",") -> str:
    """What to do with a file separated by ``delimiter`` (read as separated by ``read_with``)."""
    plural, fmt = _DELIMITERS.get(delimiter, (f"{delimiter!r}", None))
    if fmt is not None:
        return f"pass --format {fmt.lower()}"
    own, other, other_format = ("tabs", "commas", "csv") if read_with == "\t" else ("commas", "tabs", "tsv")
    return (f"save it with {own} (or with {other} and pass --format {other_format}): {plural.rstrip('s')}-separated "
            "files are not read")
