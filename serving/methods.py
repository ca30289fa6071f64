"""The ``Allow`` header: the methods a URL takes, in a fixed order.

Which methods each URL takes is declared once, in ``serving.routes``.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import current_app, request

_ORDER = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                      "OPTIONS"))}


def allow_header(methods: Iterable[str]) -> str:
    """Methods as an ``Allow`` value in a fixed order: ``"GET, HEAD, OPTIONS"``."""
    return ", ".join(sorted(set(methods), key=lambda m: (_ORDER.get(m, len(_ORDER)), m)))


def allowed_methods() -> list[str]:
    """The methods the current request's URL takes (empty for an unknown URL)."""
    adapter = current_app.create_url_adapter(request)
    return [] if adapter is None else list(adapter.allowed_methods())
