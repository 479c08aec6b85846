"""What the project's HTML pages share (the report file, the service's page): fonts and CSP hashes.

>>> inline_hash("x")
"'sha256-LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE='"
"""

from __future__ import annotations

import base64
import hashlib

# Latin text first, then the CJK fonts of Linux, macOS and Windows, so Chinese reviews render
# everywhere without shipping a font.
FONTS = ('"Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans CJK SC", "Source Han Sans SC", '
         '"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif')


def inline_hash(source: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"
