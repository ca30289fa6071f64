"""The Open Inference Protocol's REST routes (``/v2/...``): parse the URL, call the core, answer."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from serving.errors import InvalidArgument
from serving.open_inference import OpenInference

blueprint = Blueprint("kserve_v2", __name__)

EXTENSION = "tfkit_open_inference"
HEADER_LENGTH = "Inference-Header-Content-Length"


def _v2() -> OpenInference:
    return current_app.extensions[EXTENSION]


def _health(ok: bool) -> Response:
    # The protocol's health answers are the status alone: 200 true, 4xx false.
    return Response(status=200 if ok else 400)


@blueprint.get("/v2")
def server_metadata() -> Response:
    return Response(_v2().server_metadata(), mimetype="application/json")


@blueprint.get("/v2/health/live")
def live() -> Response:
    return _health(True)


@blueprint.get("/v2/health/ready")
def ready() -> Response:
    return _health(_v2().server_ready())


@blueprint.get("/v2/models/<name>/ready")
@blueprint.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    return _health(_v2().model_ready(name, version))


@blueprint.get("/v2/models/<name>")
@blueprint.get("/v2/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    return Response(_v2().model_metadata(name, version), mimetype="application/json")


@blueprint.post("/v2/models/<name>/infer")
@blueprint.post("/v2/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    # The body is JSON whatever the Content-Type says (tritonclient sends none).
    length = header_length(request.headers.get(HEADER_LENGTH))
    answer = _v2().infer(name, version, request.get_data(cache=False), length)
    if answer.header_length is None:
        return Response(answer.body, mimetype="application/json")
    response = Response(answer.body, mimetype="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(answer.header_length)
    return response


def header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header's value; None when it is absent.

    Raises:
        InvalidArgument: The header is not a number of bytes.
    """
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidArgument(f"{HEADER_LENGTH} must be a number of bytes, got {value!r}")
    return int(value)
