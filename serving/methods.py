"""Which HTTP methods a URL takes: TF Serving's GET and POST URLs kept apart, and ``Allow``.

TF Serving's REST URLs share their shape: ``GET /v1/models/m`` is a status and
``POST /v1/models/m:predict`` an inference, and the views declare both with a
plain ``<name>`` segment, which matches either. Left so, every ``/v1/models/...``
URL would take GET and POST alike as far as routing knows, and ``OPTIONS``/405
answers would list both. ``Rule`` draws the line TF Serving's own URL patterns
draw: a model name (version, label) has no ``:``, and a ``/v1`` POST URL ends in
``:<verb>``. A GET on ``.../m:predict`` is then a 405 naming POST, and a POST on
``.../m`` a 405 naming GET and HEAD, each with its ``Allow`` header.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app, request
from werkzeug.routing import BaseConverter
from werkzeug.routing import Rule as _WerkzeugRule

_ORDER = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                      "OPTIONS"))}


class _Segment(BaseConverter):
    """A model name, version or label in a ``/v1`` URL: TF Serving's ``[^/:]+``."""

    regex = "[^/:]+"


class _VerbTarget(BaseConverter):
    """The last segment of a ``/v1`` POST URL: ``<name|version|label>:<verb>``."""

    regex = "[^/]*:[^/]*"


class Rule(_WerkzeugRule):
    """A URL rule where ``/v1/models/...`` segments tell GET and POST URLs apart.

    Set as the app's ``url_rule_class``; rules outside ``/v1/models`` and variables
    with an explicit converter are as werkzeug makes them.
    """

    def get_converter(self, variable_name: str, converter_name: str, args: tuple[Any, ...],
                      kwargs: Mapping[str, Any]) -> BaseConverter:
        if converter_name == "default" and self.rule.startswith("/v1/models/"):
            if "POST" not in (self.methods or ()):
                return _Segment(self.map)
            if self.rule.endswith(f"<{variable_name}>"):
                return _VerbTarget(self.map)
        return super().get_converter(variable_name, converter_name, args, kwargs)


def allow_header(methods: Iterable[str]) -> str:
    """Methods as an ``Allow`` value in a fixed order: ``"GET, HEAD, OPTIONS"``."""
    return ", ".join(sorted(set(methods), key=lambda m: (_ORDER.get(m, len(_ORDER)), m)))


def allowed_methods() -> list[str]:
    """The methods the current request's URL takes (empty for an unknown URL)."""
    adapter = current_app.create_url_adapter(request)
    return [] if adapter is None else list(adapter.allowed_methods())
