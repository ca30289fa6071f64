"""Content codings: request bodies inflated under a size cap, answers compressed on request.

Request bodies may come ``Content-Encoding: gzip`` (or ``x-gzip``) or ``deflate``;
``deflate`` is zlib-wrapped as RFC 9110 says and tritonclient sends, or raw
deflate as some clients send instead. Any size limit applies to the inflated body,
and inflating stops one byte past it, so a small "zip bomb" costs at most the
limit in memory.

Answers of at least ``RESPONSE_COMPRESSION_MIN_BYTES`` are compressed when the
request's ``Accept-Encoding`` allows gzip or deflate (q-values, ``identity`` and
``*`` honoured) and carry ``Vary: Accept-Encoding``; smaller answers cost one
comparison.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from flask import Response

from serving.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType
from serving.limits import size_text

# Content codings this server reads and writes, by name; "x-gzip" is gzip (RFC 9110 8.4.1.3).
SUPPORTED = "gzip, deflate"
_ALIASES = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip framing
_ZLIB_WBITS = zlib.MAX_WBITS  # zlib framing: what "deflate" means in HTTP
_RAW_WBITS = -zlib.MAX_WBITS  # bare deflate, as some clients send "deflate"
# Level 1: on a 4,000-row float answer about 10x faster than level 6 for a few % more bytes.
_LEVEL = 1
_VARY = ("Vary", "Accept-Encoding")
_NO_BODY_STATUS = frozenset({204, 304})


# --- request bodies ----------------------------------------------------------------------


def request_codings(header: str | None) -> list[str]:
    """The codings a ``Content-Encoding`` header lists, in the order they were applied.

    Raises:
        UnsupportedMediaType: A coding other than gzip, x-gzip, deflate or identity.

    Example:
        >>> request_codings("gzip")
        ['gzip']
        >>> request_codings("identity")
        []
    """
    codings = []
    for item in (header or "").lower().split(","):
        name = item.strip()
        if name in ("", "identity"):
            continue
        coding = _ALIASES.get(name)
        if coding is None:
            raise UnsupportedMediaType(
                f"Content-Encoding {name!r} is not supported: send gzip, deflate or an "
                "uncompressed body"
            )
        codings.append(coding)
    return codings


def decode_body(data: bytes, codings: list[str], max_bytes: int) -> bytes:
    """Undoes the listed codings, last applied first, never producing more than ``max_bytes``.

    Args:
        data: The request body as received.
        codings: From ``request_codings``.
        max_bytes: The largest body accepted, after every step of decoding.

    Returns:
        The decoded body.

    Raises:
        PayloadTooLarge: A step decodes to more than ``max_bytes``.
        InvalidArgument: The body is not valid data of its coding.

    Example:
        >>> import gzip
        >>> decode_body(gzip.compress(b'{"instances": [1.0]}'), ["gzip"], 1024)
        b'{"instances": [1.0]}'
    """
    for coding in reversed(codings):
        data = inflate(data, coding, max_bytes)
    return data


def inflate(data: bytes, coding: str, max_bytes: int) -> bytes:
    """Decompresses one coding's data, refusing to produce more than ``max_bytes``.

    Concatenated gzip members (what ``cat a.gz b.gz`` makes) are one body, as
    gzip(1) reads them. ``deflate`` data without a zlib header is read as raw deflate.

    Raises:
        PayloadTooLarge: The data decompresses to more than ``max_bytes``.
        InvalidArgument: Not valid ``coding`` data, truncated, or followed by junk.
    """
    wbits = _GZIP_WBITS if coding == "gzip" else _deflate_wbits(data)
    parts: list[bytes] = []
    produced = 0
    rest = data
    while rest:
        decoder = zlib.decompressobj(wbits)
        try:
            part = decoder.decompress(rest, max_bytes - produced + 1)
        except zlib.error as exc:
            raise InvalidArgument(
                f"Content-Encoding is {coding} but the body is not valid {coding} data ({exc})"
            ) from None
        produced += len(part)
        if produced > max_bytes:
            raise PayloadTooLarge(
                f"Request body decompresses to over {size_text(max_bytes)}; the server accepts "
                f"at most {size_text(max_bytes)} (max_request_mb), after decompression too. "
                "Split the batch into smaller requests."
            )
        if not decoder.eof:
            raise InvalidArgument(
                f"Content-Encoding is {coding} but the {coding} body is truncated"
            )
        parts.append(part)
        rest = decoder.unused_data
        if rest and coding != "gzip":
            raise InvalidArgument(f"Content-Encoding is {coding} but data follows its end")
    return b"".join(parts)


def _deflate_wbits(data: bytes) -> int:
    # A zlib header: compression method 8, window up to 32K, header checksum a multiple of 31.
    if len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and (
        (data[0] << 8) | data[1]
    ) % 31 == 0:
        return _ZLIB_WBITS
    return _RAW_WBITS


# --- answers -----------------------------------------------------------------------------


def encode_answer(
    body: bytes, accept: str | None, min_bytes: int
) -> tuple[bytes, list[tuple[str, str]]]:
    """The answer's bytes as sent, and the headers to add for them (none when unchanged).

    Args:
        body: The answer.
        accept: The request's ``Accept-Encoding``; None when absent.
        min_bytes: ``RESPONSE_COMPRESSION_MIN_BYTES``: answers this long or longer are
            compressed when the client accepts it; a negative value never compresses.

    Returns:
        ``(body, headers)``: headers are ``Vary`` for an answer long enough to be
        compressed, and ``Content-Encoding`` when it was.

    Example:
        >>> body, headers = encode_answer(b"1.0, " * 300, "gzip, deflate", 1024)
        >>> len(body) < 1500, headers
        (True, [('Vary', 'Accept-Encoding'), ('Content-Encoding', 'gzip')])
    """
    size = len(body)
    if not _may_encode(size, accept, min_bytes):
        return body, []
    coding = _chosen_coding(accept, small=size < min_bytes) if accept else None
    if coding is None:
        return body, [_VARY] if size >= min_bytes else []
    return compress(body, coding), [_VARY, ("Content-Encoding", coding)]


def encode_response(response: Response, environ: Mapping[str, Any], min_bytes: int) -> None:
    """``encode_answer`` on a Flask response, in place; streamed and encoded ones are left."""
    accept = environ.get("HTTP_ACCEPT_ENCODING")
    size = response.calculate_content_length()  # None for a streamed body
    if (
        size is None
        or not _may_encode(size, accept, min_bytes)
        or response.direct_passthrough
        or response.status_code in _NO_BODY_STATUS
        or "Content-Encoding" in response.headers
    ):
        return
    data = response.get_data()
    body, headers = encode_answer(data, accept, min_bytes)
    for name, value in headers:  # Content-Encoding is absent; Vary may be there (Origin)
        response.headers.add(name, value)
    if body is not data:
        response.set_data(body)  # and Content-Length


def _may_encode(size: int, accept: str | None, min_bytes: int) -> bool:
    # Small answers are left alone without parsing the header, unless it has a "q=0"
    # (which may refuse identity).
    return min_bytes >= 0 and (size >= min_bytes or (accept is not None and "=0" in accept))


def compress(body: bytes, coding: str) -> bytes:
    """``body`` as ``gzip`` or (zlib-wrapped) ``deflate`` data."""
    wbits = _GZIP_WBITS if coding == "gzip" else _ZLIB_WBITS
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, wbits)
    return compressor.compress(body) + compressor.flush()


def _chosen_coding(accept: str, small: bool) -> str | None:
    """The best coding ``Accept-Encoding`` allows; None for identity.

    A small answer is compressed only when the header refuses identity
    (``identity;q=0``, or ``*;q=0`` with no ``identity`` entry).
    """
    weights: dict[str, float] = {}
    for item in accept.lower().split(","):
        name, _, params = item.partition(";")
        name = name.strip()
        if name:
            weights[_ALIASES.get(name, name)] = _quality(params)
    star = weights.get("*")
    best, best_q = None, 0.0
    for coding in ("gzip", "deflate"):  # gzip first: it wins a tie
        q = weights.get(coding, star or 0.0)
        if q > best_q:
            best, best_q = coding, q
    # Identity is acceptable unless refused; an explicit weight also ranks it.
    identity = weights.get("identity", star)
    if best is None or (identity is not None and identity > best_q):
        return None
    if small and identity != 0:
        return None
    return best


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0  # a malformed weight: not acceptable rather than a guess
    return 1.0
