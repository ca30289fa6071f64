"""The inference routes, answered straight from the WSGI call.

For every request Flask builds a request context, binds and matches the URL map,
runs the hooks and builds a response object: about 170 µs here, as much as a
small model's whole inference. The routes that carry inference traffic (those
marked ``direct`` in ``serving.routes``) are matched by their rule's regular
expression instead, get the same checks as the hooks (``security.check_token``,
``security.read_body``) and call the same views, with the same response headers
(compressed as ``encoding`` says, as the app compresses Flask's answers). Every
error is turned into its answer by Flask (the registered error handlers and the
``after_request`` hooks), as on any other route. Requests to a server with CORS
configured, and non-ASCII paths, go through Flask whole.
``DIRECT_INFERENCE = False`` in the app config sends everything through Flask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from serving import encoding, routes, security

_NOSNIFF = ("X-Content-Type-Options", "nosniff")
_STATUS_LINES = {code: f"{code} {text.upper()}" for code, text in HTTP_STATUS_CODES.items()}

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class DirectRoutes:
    """WSGI middleware: inference requests answered here, every other one by Flask.

    Installed as ``app.wsgi_app = DirectRoutes(app, views)``, Flask's own way to
    put WSGI middleware in front of an app.

    Args:
        app: The app built by ``create_app``, with its extensions and guard.
        views: The views by name (``Route.view``).
    """

    def __init__(self, app: Flask, views: Mapping[str, Callable[..., routes.Answer]]) -> None:
        self._app = app
        self._flask: WSGIApp = app.wsgi_app
        self._extensions = app.extensions
        self._guard: security.Guard = app.extensions[security.EXTENSION]
        self._config = app.config
        self._routes = [
            (route.pattern(), route, views[route.view]) for route in routes.ROUTES if route.direct
        ]
        self._methods = frozenset(m for _, route, _ in self._routes for m in route.methods)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") in self._methods:
            answer = self.answer(environ, start_response)
            if answer is not None:
                return answer
        return self._flask(environ, start_response)

    def answer(self, environ: dict[str, Any], start_response: StartResponse
               ) -> Iterable[bytes] | None:
        """The answer to an inference request; None for any request left to Flask."""
        path = environ.get("PATH_INFO", "")
        if self._guard.origins or not path.isascii():
            return None
        method = environ["REQUEST_METHOD"]
        found = self._match(path, method)
        if found is None:
            return None
        route, view, args = found
        try:
            if route.token:  # the method is one the route takes
                security.check_token(environ, self._guard)
            body = security.read_body(environ, self._config)
            answer = view(self._extensions, environ, body, **args)
        except Exception as exc:  # noqa: BLE001 - every error is answered by Flask's handlers
            return self._error(environ, start_response, exc)
        data, coding_headers = encoding.encode_answer(
            answer.body, environ.get("HTTP_ACCEPT_ENCODING"),
            int(self._config["RESPONSE_COMPRESSION_MIN_BYTES"]),
        )
        start_response(
            _STATUS_LINES[answer.status],
            [("Content-Type", answer.content_type), *answer.headers,
             ("Content-Length", str(len(data))), _NOSNIFF, *coding_headers],
        )
        return [data]

    def _match(self, path: str, method: str
               ) -> tuple[routes.Route, Callable[..., routes.Answer], dict[str, str]] | None:
        for pattern, route, view in self._routes:
            match = pattern.fullmatch(path)
            if match is not None and method in route.methods:
                return route, view, match.groupdict()
        return None

    def _error(self, environ: dict[str, Any], start_response: StartResponse, exc: Exception
               ) -> Iterable[bytes]:
        # The registered handler and the after_request hooks, in a request context of
        # their own, give exactly the answer the Flask route would have given.
        app = self._app
        with app.request_context(environ):
            response = app.make_response(app.handle_user_exception(exc))
            response = app.process_response(response)
        return response(environ, start_response)
