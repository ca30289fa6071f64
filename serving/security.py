"""App-wide request guards: bearer token, CORS, body limits (size, coding, depth), safe errors.

Everything here is a Flask ``before_request``/``after_request`` hook registered on
the app, so it covers every route, known or not. The hooks run in this order:

1. CORS preflight (``OPTIONS`` from an allowed origin) is answered at once: a
   browser never sends credentials with a preflight.
2. The bearer token, when one is configured; the routes ``serving.routes`` marks
   ``token=False`` (health checks) stay open.
3. The body (``read_body``): declared size, ``Content-Encoding: gzip`` or ``deflate``
   (the limits apply to the decompressed body; ``serving.encoding``), JSON nesting
   depth. The views then read the checked body, from ``request.get_data()``.

``serving.direct`` answers the inference routes with the same ``check_token`` and
``read_body``, without Flask.

Errors are raised as typed ``ServingError``s, so the app's one error handler
answers them; the after-request hook adds the response headers and removes
server paths from error messages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import os
import pathlib
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from flask import Flask, Request, Response, current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_content_length, get_input_stream

from serving import encoding, methods, routes
from serving.errors import InvalidArgument, PayloadTooLarge, Unauthenticated
from serving.limits import nesting_exceeds, size_text
from serving.views import kserve_v2, tf_serving

EXTENSION = "tfkit_security"

DEFAULTS: dict[str, Any] = {
    "MAX_JSON_DEPTH": 32,  # a rank-r tensor in row format nests about r + 3 deep
    "MAX_BATCH_ROWS": 65536,  # instances / examples / first dim of inputs; 0: no limit
    "AUTH_TOKEN": None,  # or TFKIT_AUTH_TOKEN; every route but health checks needs it
    "AUTH_TOKEN_FILE": None,  # the token in a file (kept out of `ps` and shell history)
    "CORS_ALLOWED_ORIGINS": [],  # e.g. ["https://app.example.com"]; "*" for any; empty: off
}

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # whose body the hook reads and checks
# RFC 6750's b64token: what `openssl rand -hex 32` or `-base64 32` produce.
_TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ORIGIN_SYNTAX = re.compile(r"https?://[^/\s]+")
_CORS_METHODS = "GET, POST, OPTIONS"  # for a URL no route knows
_CORS_HEADERS = "Authorization, Content-Type, Content-Encoding"
_CORS_MAX_AGE = "600"


@dataclasses.dataclass(frozen=True)
class Guard:
    """The security settings of one app, resolved once from its config.

    Attributes:
        token_digest: SHA-256 of the bearer token; None when authentication is off.
        origins: Origins allowed by CORS; empty when CORS is off.
        server_paths: Directories never shown to a client, longest first.
    """

    token_digest: bytes | None
    origins: frozenset[str]
    server_paths: tuple[str, ...]

    def allows_origin(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin.lower() in self.origins)


def install(app: Flask) -> Guard:
    """Registers the hooks on ``app``; its config must already be complete.

    Args:
        app: The app built by ``create_app``.

    Returns:
        The resolved settings, also at ``app.extensions["tfkit_security"]``.

    Raises:
        ValueError: An empty or malformed token, an unreadable token file, both a
            token and a token file, or a malformed CORS origin.

    Example:
        >>> app = Flask("demo")
        >>> _ = app.config.from_mapping(DEFAULTS, AUTH_TOKEN="s3cret")
        >>> install(app).token_digest is not None
        True
    """
    config = app.config
    token = _token(config)
    guard = Guard(
        token_digest=_digest(token) if token is not None else None,
        origins=frozenset(_origins(config.get("CORS_ALLOWED_ORIGINS"))),
        server_paths=_server_paths(config),
    )
    app.extensions[EXTENSION] = guard
    app.before_request(_check_request)
    app.after_request(_finish)
    return guard


def _guard() -> Guard:
    return current_app.extensions[EXTENSION]


# --- configuration -----------------------------------------------------------------------


def _token(config: Mapping[str, Any]) -> str | None:
    token = config.get("AUTH_TOKEN")
    raw = os.environ.get("TFKIT_AUTH_TOKEN")
    if not isinstance(token, str):
        # from_prefixed_env JSON-decodes values, so TFKIT_AUTH_TOKEN=1234 arrives as an
        # int and TFKIT_AUTH_TOKEN=null as None (which would switch authentication
        # off); a token is the variable's text.
        if raw is not None:
            token = raw
        elif token is not None:
            token = str(token)
    path = config.get("AUTH_TOKEN_FILE")
    if path:
        if token is not None:
            raise ValueError(
                "Set either AUTH_TOKEN (TFKIT_AUTH_TOKEN) or AUTH_TOKEN_FILE, not both"
            )
        try:
            token = pathlib.Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"Cannot read the auth token file {path}: {exc}") from None
    if token is None:
        return None
    token = token.strip()
    if not token:
        raise ValueError(
            "The auth token is empty; unset TFKIT_AUTH_TOKEN/AUTH_TOKEN_FILE to run without one"
        )
    if not _TOKEN_SYNTAX.fullmatch(token):
        raise ValueError(
            "The auth token must be letters, digits and -._~+/ (e.g. `openssl rand -hex 32`)"
        )
    return token


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps even the token's length out of the timing.
    return hashlib.sha256(token.encode("ascii")).digest()


def _origins(value: Any) -> list[str]:
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    origins = []
    for item in items:
        origin = str(item).strip().rstrip("/").lower()
        if origin != "*" and not _ORIGIN_SYNTAX.fullmatch(origin):
            raise ValueError(
                f"CORS origin {item!r} must look like https://host[:port], or be *"
            )
        origins.append(origin)
    return origins


def _server_paths(config: Mapping[str, Any]) -> tuple[str, ...]:
    candidates: list[Any] = [
        config.get("MODELS"), config.get("MODEL_BASE_PATH"), os.getcwd(),
        pathlib.Path.home(), sys.prefix, sys.base_prefix,
    ]
    if config.get("MODEL_CONFIG_FILE"):
        candidates.append(pathlib.Path(config["MODEL_CONFIG_FILE"]).parent)
    return _longest_first(candidates)


def _longest_first(candidates: Iterable[Any]) -> tuple[str, ...]:
    paths = set()
    for candidate in candidates:
        if not candidate:
            continue
        path = pathlib.Path(candidate).expanduser()
        for form in (path.absolute(), path.resolve()):
            text = str(form).rstrip("/")
            if len(text) > 1:  # never "/" itself
                paths.add(text)
    return tuple(sorted(paths, key=len, reverse=True))


# --- before_request hook -----------------------------------------------------------------


def _check_request() -> Response | None:
    """The three checks, in order, on one look-up of the request, the app and its guard.

    One hook rather than three: Flask pays a coroutine check and a context-proxy
    look-up per hook and per attribute, which on a small model is a visible share
    of a request. Headers are read from the WSGI environ for the same reason.
    """
    req = request._get_current_object()  # noqa: SLF001 - public werkzeug API, leading _
    app = current_app._get_current_object()  # noqa: SLF001
    guard: Guard = app.extensions[EXTENSION]
    environ = req.environ
    method = req.method
    if method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
        preflight = _answer_preflight(environ, guard)
        if preflight is not None:
            return preflight
    if guard.token_digest is not None:
        _authenticate(req, environ, guard)
    if method in BODY_METHODS:
        req.stream = io.BytesIO(read_body(environ, app.config))  # what the views read
    return None


def _answer_preflight(environ: Mapping[str, Any], guard: Guard) -> Response | None:
    if not guard.allows_origin(environ.get("HTTP_ORIGIN")):
        return None  # no CORS headers: the browser refuses the cross-origin call
    response = Response(status=204)
    allow = methods.allow_header(methods.allowed_methods())
    if allow:
        response.headers["Allow"] = allow
    response.headers["Access-Control-Allow-Methods"] = allow or _CORS_METHODS
    response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = _CORS_MAX_AGE
    return response  # _finish adds Access-Control-Allow-Origin


def _authenticate(req: Request, environ: Mapping[str, Any], guard: Guard) -> None:
    # An unknown URL, or a method its route does not take, needs the token too.
    rule = req.url_rule
    route = None if rule is None else routes.BY_RULE.get(rule.rule)
    if route is None or route.needs_token(req.method):
        check_token(environ, guard)


def check_token(environ: Mapping[str, Any], guard: Guard) -> None:
    """Refuses a request without the bearer token, when the server has one.

    Raises:
        Unauthenticated: The header is missing, not ``Bearer <token>``, or the wrong token.
    """
    if guard.token_digest is None:
        return
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.strip().partition(" ")
    if not header:
        raise Unauthenticated(
            "This server requires a bearer token: send the header 'Authorization: Bearer <token>'"
        )
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthenticated(
            "Authorization must use the Bearer scheme: 'Authorization: Bearer <token>'"
        )
    presented = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    if not hmac.compare_digest(presented, guard.token_digest):
        raise Unauthenticated("The bearer token is not valid")


def read_body(environ: dict[str, Any], config: Mapping[str, Any]) -> bytes:
    """A request's body, checked: declared size, ``Content-Encoding``, JSON nesting depth.

    The one body check, for the ``before_request`` hook and for requests answered
    without Flask's request context (``serving.direct``) alike. A compressed body
    is returned decompressed, and the environ then describes it so.

    Raises:
        PayloadTooLarge: Longer than ``MAX_CONTENT_LENGTH``, before or after decompression.
        UnsupportedMediaType: A ``Content-Encoding`` other than gzip or deflate.
        InvalidArgument: JSON nested deeper than ``MAX_JSON_DEPTH``, or a broken coding.
        ClientDisconnected: Fewer bytes arrived than declared.
    """
    # Limits are read per request, so a test (or an operator's hook) may change them.
    max_body = int(config["MAX_CONTENT_LENGTH"])
    declared = _declared_length(environ)
    if declared is not None and declared > max_body:
        raise _too_large(f"Request body is {size_text(declared)}", max_body)
    coded = environ.get("HTTP_CONTENT_ENCODING")
    codings = encoding.request_codings(coded) if coded else []
    if declared is not None:
        body = _read_declared(environ, declared)
    else:
        body = _read_unsized(environ, max_body)
    if codings:
        body = encoding.decode_body(body, codings, max_body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_CONTENT_ENCODING", None)
    _check_depth(body, environ, config)
    return body


def _declared_length(environ: Mapping[str, Any]) -> int | None:
    # Most requests carry plain digits; werkzeug's parser (for anything else) costs
    # about 1 µs, a visible share of a request on the direct path.
    length = environ.get("CONTENT_LENGTH", "")
    if length.isascii() and length.isdigit() and "HTTP_TRANSFER_ENCODING" not in environ:
        return int(length)
    return get_content_length(environ)


def _read_declared(environ: Mapping[str, Any], declared: int) -> bytes:
    # Read in one call as WSGI allows (never past Content-Length); werkzeug's
    # limited stream would repeat the size checks, a chunk at a time.
    body = environ["wsgi.input"].read(declared) if declared else b""
    if len(body) < declared:
        raise ClientDisconnected()
    return body


def _check_depth(body: bytes, environ: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    max_depth = int(config["MAX_JSON_DEPTH"])
    # The bracket count first: most bodies have too few brackets to nest too deep.
    if body.count(b"[") + body.count(b"{") > max_depth and nesting_exceeds(
        _json_part(environ, body), max_depth
    ):
        raise InvalidArgument(
            f"JSON nesting is deeper than {max_depth} levels, the most accepted "
            "(max_json_depth); a tensor of rank r nests about r + 3 deep in a request"
        )


def _read_unsized(environ: Mapping[str, Any], max_body: int) -> bytes:
    # A chunked body: werkzeug's stream stops at max_body, where only one more read
    # tells "exactly the limit" from "more than the limit".
    stream = get_input_stream(environ, max_content_length=max_body)
    try:
        body = stream.read()
        if len(body) >= max_body and stream.read(1):
            raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        raise _too_large(f"Request body is over {size_text(max_body)}", max_body) from None
    return body


def _json_part(environ: Mapping[str, Any], body: bytes) -> bytes:
    # KServe's binary tensor extension: only this many leading bytes of the body are JSON.
    length = environ.get(kserve_v2.HEADER_LENGTH_KEY, "").strip()
    if length.isascii() and length.isdigit():
        return body[: int(length)]
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if mimetype == "application/octet-stream":
        return b""
    return body


def _too_large(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what}; the server accepts at most {size_text(limit)} (max_request_mb), after "
        "decompression too. Split the batch into smaller requests."
    )


# --- after_request hook ------------------------------------------------------------------


def _finish(response: Response) -> Response:
    guard = _guard()
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if guard.origins:
        origin = request.environ.get("HTTP_ORIGIN")
        headers.add("Vary", "Origin")
        if guard.allows_origin(origin):
            headers["Access-Control-Allow-Origin"] = "*" if "*" in guard.origins else origin
    if response.status_code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="tfkit"')
    if response.status_code >= 400 and response.is_json and not response.direct_passthrough:
        _scrub_error(response, guard)
    return response


def _scrub_error(response: Response, guard: Guard) -> None:
    try:
        body = orjson.loads(response.get_data())
    except orjson.JSONDecodeError:
        return
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return
    message = scrub_paths(body["error"], guard.server_paths + _model_paths())
    if message != body["error"]:
        body["error"] = message
        response.set_data(orjson.dumps(body))


def _model_paths() -> tuple[str, ...]:
    core = current_app.extensions.get(tf_serving.EXTENSION)
    repository = getattr(core, "repository", None)
    if repository is None or not hasattr(repository, "base_paths"):
        return ()
    return _longest_first(repository.base_paths())


def scrub_paths(message: str, paths: Iterable[str]) -> str:
    """Replaces absolute server directories in an error message with ``<server path>``.

    A directory matches only as a whole path component run, so ``/srv/models``
    leaves ``/srv/models2`` and a request path such as ``/v1/models/x`` alone.

    Example:
        >>> scrub_paths("missing /srv/models/a/1/x.pb", ["/srv/models"])
        'missing <server path>/a/1/x.pb'
    """
    found = [p for p in sorted(paths, key=len, reverse=True) if p.startswith("/") and p in message]
    if not found:
        return message
    pattern = "|".join(re.escape(p) for p in found)
    return re.sub(rf"(?<![\w.\-/])(?:{pattern})(?![\w.\-])", "<server path>", message)
