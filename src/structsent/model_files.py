"""Whether a file a model load reads is there: a regular file, nothing, or something to refuse.

The one place every format and the tokenizer ask, so that a named pipe, a directory, a device or
a loop of links at a model file's name is refused the same way for every file, instead of being
taken for a missing file (a misleading "copy the files here") or skipped (defaults used in
silence). Only ``stat`` looks: opening a named pipe would wait for a writer for ever.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import ModelFormatError
from .io.paths import kind_of, path_problem


def model_file_present(path: Path) -> bool:
    """True where a regular file lies at ``path`` (through links), False where nothing does;
    anything else at that name is a ModelFormatError naming what it is.

    >>> model_file_present(Path("/no/such/config.json"))
    False
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):  # a link whose target is gone: a damaged copy, not an absent file
            raise ModelFormatError(f"{path}: not a regular file (a link to a file that does not exist)") from None
        return False
    except OSError as err:  # a loop of links, no permission
        problem = path_problem(err)
        if err.errno == errno.ELOOP:
            problem = f"not a regular file ({problem})"
        raise ModelFormatError(f"{path}: {problem}") from err
    if not stat.S_ISREG(mode):
        raise ModelFormatError(f"{path}: not a regular file ({kind_of(mode)})")
    return True
