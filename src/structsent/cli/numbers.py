"""Numbers on the command line and in STRUCTSENT_* variables: written as people write them.

Python's int() and float() also read digits of other scripts ("١٢٣" is 123) and underscores
("1_000"): a value pasted from elsewhere, or a typo, ran as some other number without a word.
Flags and variables take ASCII digits only (a sign, and for durations a decimal point, an
exponent, and "inf"/"nan", which the settings then refuse by name).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def integer(text: str) -> int:
    """An argparse ``type``: an integer in ASCII digits, e.g. 4096."""
    return _parsed(text, int, "integer")


def decimal(text: str) -> float:
    """An argparse ``type``: a number in ASCII digits, e.g. 2.5."""
    return _parsed(text, float, "number")


def _parsed(text: str, convert: Callable[[str], T], kind: str) -> T:
    if not text.isascii() or "_" in text:
        raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r} (ASCII digits only, no underscores)")
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {kind}: {text!r}") from None
