"""Request-body limits as pure functions on bytes: gzip with a size cap, JSON nesting depth."""

from __future__ import annotations

import zlib

import numpy as np

from serving.errors import InvalidArgument, PayloadTooLarge

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip framing only, as Content-Encoding: gzip promises
_SCAN_CHUNK = 1 << 22  # bytes per step of the depth scan: bounds its temporary arrays
_QUOTE, _OPEN_LIST, _OPEN_OBJECT, _CLOSE_LIST, _CLOSE_OBJECT = b'"[{]}'


def size_text(n_bytes: int) -> str:
    """``67108864`` → ``"64 MiB"``; what a client is told about limits."""
    mib = n_bytes / (1024 * 1024)
    return f"{mib:.4g} MiB" if mib >= 1 else f"{n_bytes} bytes"


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompresses a gzip body, refusing to produce more than ``max_bytes``.

    The output is capped while decompressing, so a small "zip bomb" costs at
    most ``max_bytes`` of memory before it is refused. Concatenated gzip
    members (what ``cat a.gz b.gz`` makes) are one body, as gzip(1) reads them.

    Args:
        data: The compressed request body.
        max_bytes: The largest decompressed body accepted.

    Returns:
        The decompressed body.

    Raises:
        PayloadTooLarge: The body decompresses to more than ``max_bytes``.
        InvalidArgument: The body is not valid gzip data.

    Example:
        >>> import gzip
        >>> gunzip(gzip.compress(b'{"instances": [1.0]}'), 1024)
        b'{"instances": [1.0]}'
    """
    parts: list[bytes] = []
    produced = 0
    rest = data
    while rest:
        decoder = zlib.decompressobj(_GZIP_WBITS)
        try:
            part = decoder.decompress(rest, max_bytes - produced + 1)
        except zlib.error as exc:
            raise InvalidArgument(
                f"Content-Encoding is gzip but the body is not valid gzip data ({exc})"
            ) from None
        produced += len(part)
        if produced > max_bytes:
            raise PayloadTooLarge(
                f"Request body decompresses to over {size_text(max_bytes)}; the server accepts "
                f"at most {size_text(max_bytes)} (max_request_mb), after gzip decompression "
                "too. Split the batch into smaller requests."
            )
        if not decoder.eof:
            raise InvalidArgument("Content-Encoding is gzip but the gzip body is truncated")
        parts.append(part)
        rest = decoder.unused_data
    return b"".join(parts)


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
