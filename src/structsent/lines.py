"""What the command line prints about a name: one line, nothing a terminal would act on.

A file name may hold a line break (an error is one line of standard error) or an escape sequence
(ESC [31m recoloured the terminal; a form feed cleared it): control characters are written as
escapes (\\n, \\r, \\x1b), so the name shown is the name, and a space is never put in their place
(that would name another file).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 and C1 controls and DEL; a tab stays a tab
_NAMED = {"\n": "\\n", "\r": "\\r"}


def one_line(text: str) -> str:
    """``text`` with its control characters written as escapes."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a character ``one_line`` would escape."""
    return _CONTROL.search(text) is not None
