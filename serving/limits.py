"""Request-body limits as pure functions on bytes: JSON nesting depth, sizes as text.

Compressed bodies are inflated under the size cap in ``serving.encoding``.
"""

from __future__ import annotations

import numpy as np

_SCAN_CHUNK = 1 << 22  # bytes per step of the depth scan: bounds its temporary arrays
_QUOTE, _OPEN_LIST, _OPEN_OBJECT, _CLOSE_LIST, _CLOSE_OBJECT = b'"[{]}'


def size_text(n_bytes: int) -> str:
    """``67108864`` → ``"64 MiB"``; what a client is told about limits."""
    mib = n_bytes / (1024 * 1024)
    return f"{mib:.4g} MiB" if mib >= 1 else f"{n_bytes} bytes"


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether JSON text nests ``[``/``{`` deeper than ``limit``, found without parsing it.

    Brackets inside strings do not count. The scan is vectorised (numpy, in
    chunks) and stops at the first bracket past the limit, so checking a 64 MiB
    body costs a fraction of parsing it. On text that is not valid JSON the
    answer may be off, but the parser then rejects the body anyway.

    Args:
        data: A JSON document.
        limit: The deepest nesting allowed (a scalar document has depth 0).

    Returns:
        True if some bracket opens at depth ``limit + 1`` or deeper.

    Example:
        >>> nesting_exceeds(b'{"a": [[1], "[[[[["]}', limit=3)
        False
        >>> nesting_exceeds(b'[[[[1]]]]', limit=3)
        True
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # not even enough brackets
    if b"\\" in data:
        # In valid JSON a backslash only starts a two-character escape inside a
        # string; dropping escaped backslashes, then escaped quotes, leaves every
        # remaining quote a real string delimiter.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = np.frombuffer(data, np.uint8)
    depth, in_string = 0, False
    for start in range(0, len(text), _SCAN_CHUNK):
        chunk = text[start : start + _SCAN_CHUNK]
        quotes = chunk == _QUOTE
        opens = (chunk == _OPEN_LIST) | (chunk == _OPEN_OBJECT)
        closes = (chunk == _CLOSE_LIST) | (chunk == _CLOSE_OBJECT)
        marks = np.flatnonzero(quotes | opens | closes)
        if not marks.size:
            continue
        inside = (np.cumsum(quotes[marks], dtype=np.int64) & 1).astype(bool) ^ in_string
        steps = opens[marks].astype(np.int64) - closes[marks]
        steps[inside] = 0
        levels = np.cumsum(steps) + depth
        if levels.max() > limit:
            return True
        depth, in_string = int(levels[-1]), bool(inside[-1])
    return False
