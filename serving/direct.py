"""The inference routes, answered straight from the WSGI call.

For every request Flask builds a request context, binds and matches the URL map,
runs the hooks and builds a response object: about 170 µs here, as much as a
small model's whole inference. The two routes that carry inference traffic,

    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:{predict|classify|regress}
    POST /v2/models/{name}[/versions/{v}]/infer

are matched by a regular expression instead, get the same checks as the hooks
(``security.check_token``, ``security.read_plain_body``) and call the same core
methods as the Flask views, with the same response headers (compressed as
``encoding`` says, as the app compresses Flask's answers). Every error is
turned into its answer by Flask (the registered error handlers and the
``after_request`` hook), as on any other route. Requests these checks were not
written for (no ``Content-Length``, a ``Content-Encoding``, CORS configured, a
non-ASCII path) go through Flask whole. ``DIRECT_INFERENCE = False`` in the app
config sends everything through Flask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from serving import encoding, security
from serving.open_inference import OpenInference
from serving.views.kserve_v2 import HEADER_LENGTH, header_length

_V1 = re.compile(r"/v1/models/([^/:]+)(?:/(versions|labels)/([^/:]+))?:(predict|classify|regress)")
_V2 = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_NOSNIFF = ("X-Content-Type-Options", "nosniff")

StartResponse = Callable[..., Any]


class DirectRoutes:
    """Answers inference requests without Flask's per-request machinery.

    Args:
        app: The app built by ``create_app``, with its core, V2 layer and guard.
        core_key: Where the app keeps the TF Serving core in ``app.extensions``.
        v2_key: Where it keeps the ``OpenInference`` layer.
    """

    def __init__(self, app: Flask, core_key: str, v2_key: str) -> None:
        self._app = app
        self._core = app.extensions[core_key]
        self._v2: OpenInference = app.extensions[v2_key]
        self._guard: security.Guard = app.extensions[security.EXTENSION]
        self._config = app.config

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes] | None:
        """The answer to an inference request; None for any request left to Flask."""
        path = environ.get("PATH_INFO", "")
        v1 = _V1.fullmatch(path)
        v2 = None if v1 else _V2.fullmatch(path)
        length = environ.get("CONTENT_LENGTH", "")
        if (
            (v1 is None and v2 is None)
            or self._guard.origins
            or not path.isascii()
            or not (length.isascii() and length.isdigit())
            or "HTTP_CONTENT_ENCODING" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
        ):
            return None
        try:
            security.check_token(environ, self._guard)
            body = security.read_plain_body(environ, self._config, int(length))
            if v1 is not None:
                name, where, value, verb = v1.groups()
                kwargs = {} if where is None else {where[:-1]: value}
                answer = getattr(self._core, verb)(name, body, **kwargs)
                headers = [("Content-Type", "application/json")]
            else:
                answer, headers = self._infer_v2(environ, v2.group(1), v2.group(2), body)
        except Exception as exc:  # noqa: BLE001 - every error is answered by Flask's handlers
            return self._error(environ, start_response, exc)
        answer, coding_headers = encoding.encode_answer(
            answer, environ.get("HTTP_ACCEPT_ENCODING"),
            int(self._config["RESPONSE_COMPRESSION_MIN_BYTES"]),
        )
        headers += [("Content-Length", str(len(answer))), _NOSNIFF, *coding_headers]
        start_response("200 OK", headers)
        return [answer]

    def _infer_v2(self, environ: dict[str, Any], name: str, version: str | None, body: bytes
                  ) -> tuple[bytes, list[tuple[str, str]]]:
        length = header_length(environ.get(security.BINARY_HEADER_LENGTH_KEY))
        answer = self._v2.infer(name, version, body, length)
        if answer.header_length is None:
            return answer.body, [("Content-Type", "application/json")]
        return answer.body, [("Content-Type", "application/octet-stream"),
                             (HEADER_LENGTH, str(answer.header_length))]

    def _error(self, environ: dict[str, Any], start_response: StartResponse, exc: Exception
               ) -> Iterable[bytes]:
        # The registered handler and the after_request hook, in a request context of
        # their own, give exactly the answer the Flask route would have given.
        app = self._app
        with app.request_context(environ):
            response = app.make_response(app.handle_user_exception(exc))
            response = app.process_response(response)
        return response(environ, start_response)
