"""File names made from arbitrary text (item ids, tag names): unique, portable and bounded."""

from __future__ import annotations

import hashlib
import re

MAX_READABLE = 60


def safe_stem(text: str, max_readable: int = MAX_READABLE) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``, cut to
    ``max_readable`` characters, plus ``-`` and 10 hex digits of its SHA-1: two texts that read alike
    once sanitised (``a/b``, ``a_b``) still get different names, and no name exceeds
    ``max_readable + 11`` characters, far below any file system's limit."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:max_readable].lstrip(".") or "_"
    return f"{readable}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}"
