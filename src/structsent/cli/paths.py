"""Paths in flags: an empty one is refused (``Path("")`` is the current directory, which was then
refused as "., a directory", a name never typed)."""

from __future__ import annotations

import argparse
from pathlib import Path


def file_path(text: str) -> Path:
    """A flag's path, refusing an empty or blank one (an unset variable in ``--corpus "$CORPUS"``).

    >>> file_path("reviews.txt")
    PosixPath('reviews.txt')
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path ({text!r}); name a file")
    return Path(text)
