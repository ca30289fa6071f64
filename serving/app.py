"""The Flask app factory: configuration, state in ``app.extensions``, errors → HTTP."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from serving import encoding, methods, metric_snapshots, routes, security
from serving.batching import Batcher, parameters_from_config
from serving.direct import DirectRoutes
from serving.errors import ServingError, UnsupportedMediaType
from serving.inference import InferenceCore
from serving.json_codec import dumps
from serving.metrics import Metrics
from serving.model_config import ModelSource, load_model_config
from serving.open_inference import OpenInference
from serving.repository import ModelRepository
from serving.servable import Servable
from serving.views import kserve_v2, tf_serving

logger = logging.getLogger(__name__)

EXTENSION = tf_serving.EXTENSION
View = Callable[..., routes.Answer]

DEFAULTS: dict[str, Any] = {
    "MODELS": "models",  # a repository: every sub-folder is a model named after it
    "MODEL_NAME": None,  # with MODEL_BASE_PATH: serve one model, as TF Serving's flags do
    "MODEL_BASE_PATH": None,
    "MODEL_CONFIG_FILE": None,  # TF Serving text-proto (or .json) model config
    "FILE_SYSTEM_POLL_WAIT_SECONDS": 1.0,  # 0 or less: load once, never poll
    "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,  # Flask refuses larger bodies with 413
    # Answers this long or longer are gzip/deflate-compressed when the request's
    # Accept-Encoding allows it (serving/encoding.py); -1: never.
    "RESPONSE_COMPRESSION_MIN_BYTES": 1024,
    # Dynamic batching (serving/batching.py); None: the parameters file's value, else
    # TF Serving's default.
    "ENABLE_BATCHING": True,
    "BATCHING_PARAMETERS_FILE": None,
    "MAX_BATCH_SIZE": None,
    "BATCH_TIMEOUT_MICROS": None,
    "NUM_BATCH_THREADS": None,
    "MAX_ENQUEUED_BATCHES": None,
    # Graph execution: -1 runs a request's ops in its own thread (requests already run in
    # parallel threads; a thread-pool hand-off costs more than a small model's ops).
    "TENSORFLOW_INTER_OP_PARALLELISM": -1,
    "TENSORFLOW_INTRA_OP_PARALLELISM": 0,
    # Inference routes answered straight from WSGI (serving/direct.py); False: all via Flask.
    "DIRECT_INFERENCE": True,
    # Set by `tfkit serve` with several workers: where they share metrics (metric_snapshots.py).
    "METRICS_DIR": None,
}


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Builds the model server.

    Configuration comes from ``DEFAULTS``, then ``TFKIT_``-prefixed environment
    variables (``TFKIT_MODELS=/srv/models``, ``TFKIT_FILE_SYSTEM_POLL_WAIT_SECONDS=5``),
    then ``test_config``. Models load before this returns, so the app answers
    for them from its first request; polling then runs in a daemon thread.

    Args:
        test_config: Overrides, e.g. ``{"MODELS": tmp_path, "FILE_SYSTEM_POLL_WAIT_SECONDS": 0}``.

    Returns:
        The Flask app; its repository is ``app.extensions[EXTENSION].repository``.

    Example:
        >>> app = create_app({"MODELS": "models"})          # doctest: +SKIP
        >>> app.test_client().get("/v1/models/penguins").json  # doctest: +SKIP
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_mapping(security.DEFAULTS)
    app.config.from_prefixed_env("TFKIT")
    if test_config is not None:
        app.config.from_mapping(test_config)
    # after_request hooks run last-registered first: compression sees the final body.
    app.after_request(_finish)
    security.install(app)  # token, CORS and body limits, on every route

    loader = functools.partial(
        Servable,
        inter_op_threads=int(app.config["TENSORFLOW_INTER_OP_PARALLELISM"]),
        intra_op_threads=int(app.config["TENSORFLOW_INTRA_OP_PARALLELISM"]),
    )
    repository = ModelRepository(
        _discovery(app.config), float(app.config["FILE_SYSTEM_POLL_WAIT_SECONDS"]), loader
    )
    repository.poll()
    repository.start()
    metrics = Metrics()
    batcher = Batcher(parameters_from_config(app.config))
    metrics.add_collector(batcher.metrics)
    metric_snapshots.install(app, metrics)
    core = InferenceCore(
        repository, metrics, batcher, max_batch_rows=app.config["MAX_BATCH_ROWS"]
    )
    app.extensions[EXTENSION] = core
    app.extensions[kserve_v2.EXTENSION] = OpenInference(core)

    views = _add_routes(app)
    app.register_error_handler(ServingError, _serving_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    if app.config["DIRECT_INFERENCE"]:
        app.wsgi_app = DirectRoutes(app, views)  # type: ignore[method-assign]
    return app


def _add_routes(app: Flask) -> dict[str, View]:
    """Adds every route of ``routes.ROUTES`` to the app's URL map; returns the views by name."""
    app.url_map.converters.update(routes.CONVERTERS)
    views: dict[str, View] = {}
    flask_views: dict[str, Callable[..., Response]] = {}
    for route in routes.ROUTES:
        if route.view not in views:
            module, _, name = route.view.partition(".")
            views[route.view] = getattr(importlib.import_module(f"serving.views.{module}"), name)
            flask_views[route.view] = _flask_view(views[route.view])
        app.add_url_rule(route.rule, route.view, flask_views[route.view], methods=route.methods)
    return views


def _flask_view(view: View) -> Callable[..., Response]:
    """A transport-neutral view as a Flask view: the request in, a ``Response`` out."""

    def flask_view(**args: str) -> Response:
        req = request._get_current_object()  # noqa: SLF001 - public werkzeug API, leading _
        # The before_request hook has read and checked the body of these methods.
        body = req.get_data(cache=False) if req.method in security.BODY_METHODS else b""
        answer = view(current_app.extensions, req.environ, body, **args)
        return Response(answer.body, answer.status, answer.headers,
                        content_type=answer.content_type)

    flask_view.__name__ = view.__name__
    return flask_view


def _finish(response: Response) -> Response:
    """The last ``after_request`` hook: ``Allow`` in a fixed order, and compression."""
    environ = request.environ
    if environ["REQUEST_METHOD"] == "OPTIONS" and "Allow" in response.headers:
        response.headers["Allow"] = methods.allow_header(response.allow)
    encoding.encode_response(response, environ,
                             int(current_app.config["RESPONSE_COMPRESSION_MIN_BYTES"]))
    return response


def _discovery(config: Mapping[str, Any]):
    """Returns a callable listing the model sources, re-read on every poll."""
    configured: list[ModelSource] = []
    if config["MODEL_CONFIG_FILE"]:
        configured = load_model_config(config["MODEL_CONFIG_FILE"])
    elif config["MODEL_BASE_PATH"]:
        configured = [
            ModelSource(config["MODEL_NAME"] or "default", pathlib.Path(config["MODEL_BASE_PATH"]))
        ]
    models_dir = None if configured else pathlib.Path(config["MODELS"])

    def discover() -> list[ModelSource]:
        if models_dir is None:
            return configured
        return [
            ModelSource(entry.name, pathlib.Path(entry.path))
            for entry in sorted(os.scandir(models_dir), key=lambda e: e.name)
            if entry.is_dir() and not entry.name.startswith(".")
        ]

    return discover


def _json_error(message: str, status: int) -> Response:
    # A message may quote request text; a lone surrogate in it must not break the answer.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return Response(dumps({"error": message}), status=status, mimetype="application/json")


# The one place errors become HTTP answers.
def _serving_error(exc: ServingError) -> Response:
    response = _json_error(exc.message, exc.http_status)
    if isinstance(exc, UnsupportedMediaType):
        response.headers["Accept-Encoding"] = encoding.SUPPORTED  # RFC 9110 12.5.3
    return response


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, MethodNotAllowed):
        return _method_not_allowed(exc)
    response = _json_error(exc.description or exc.name, exc.code or 500)
    for name, value in exc.get_headers():  # e.g. Retry-After; the body is ours
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _method_not_allowed(exc: MethodNotAllowed) -> Response:
    # RFC 9110 15.5.6: a 405 must list the methods the URL does take.
    allow = methods.allow_header(exc.valid_methods or methods.allowed_methods())
    takes = ", ".join(m for m in allow.split(", ") if m != "OPTIONS")
    response = _json_error(
        f"Method {request.method} is not allowed for {request.path}: it takes {takes}", 405
    )
    response.headers["Allow"] = allow
    return response


def _unexpected_error(exc: Exception) -> Response:
    logger.exception("Unexpected error")
    return _json_error(f"Internal error: {type(exc).__name__}", 500)
