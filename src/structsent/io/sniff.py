"""Signs that a text file is read as what it is not: UTF-16 read as UTF-8, a semicolon- or
tab-separated file read as CSV. Read so, it gives rows of noise or whole lines as one column,
labelled without a word; the label job and the report both refuse it with what to do.

>>> check_header(["id", "text"], ",", "in.csv")  # a header of its own delimiter passes
>>> check_header(["id\\ttext"], ",", "in.csv")
Traceback (most recent call last):
...
structsent.errors.BadInputError: in.csv: the header is one column holding tabs: not CSV; pass --format tsv
"""

from __future__ import annotations

import re

from ..errors import BadInputError

UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
_DELIMITERS = {",": ("commas", "CSV"), "\t": ("tabs", "TSV"), ";": ("semicolons", None)}
_EXCEL_HINT = re.compile(r"sep=(.)")  # Excel's first line naming the delimiter, which no reader but Excel reads


def check_not_utf16(head: bytes, name: str) -> None:
    """Refuse UTF-16 text. ``head``: the file's first bytes, its first line and the byte after it
    where there are any (UTF-16 without a mark holds NUL bytes on its first line, or just after it
    as the high byte of its line break)."""
    if head.startswith(UTF16_MARKS):
        raise BadInputError(f'{name}: not UTF-8 text (UTF-16, as Excel\'s "Unicode text" saves it); '
                            'save it as UTF-8 (in Excel: "CSV UTF-8")')
    line, _, after = head.partition(b"\n")
    if b"\x00" in line or after.startswith(b"\x00"):
        raise BadInputError(f"{name}: not UTF-8 text (NUL bytes in or just after its first line, as UTF-16 text has); "
                            "save it as UTF-8")


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
                            f"{_advice(seen)}")


def _advice(delimiter: str) -> str:
    """What to do with a file separated by ``delimiter``."""
    plural, fmt = _DELIMITERS.get(delimiter, (f"{delimiter!r}", None))
    if fmt is not None:
        return f"pass --format {fmt.lower()}"
    return (f"save it with commas (or with tabs and pass --format tsv): {plural.rstrip('s')}-separated files "
            "are not read")
