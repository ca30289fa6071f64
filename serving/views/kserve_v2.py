"""The Open Inference Protocol's REST routes (``/v2/...``), Triton's extensions included."""

from __future__ import annotations

from typing import NoReturn

from flask import Blueprint, Response, current_app, request

from serving import json_codec
from serving.errors import InvalidArgument
from serving.open_inference import OpenInference

blueprint = Blueprint("kserve_v2", __name__)

EXTENSION = "tfkit_open_inference"
HEADER_LENGTH = "Inference-Header-Content-Length"


def _v2() -> OpenInference:
    return current_app.extensions[EXTENSION]


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="application/json")


@blueprint.get("/v2")
def server_metadata() -> Response:
    return _json(_v2().server_metadata())


@blueprint.get("/v2/health/live")
def live() -> Response:
    return _json(json_codec.dumps({"live": True}))


@blueprint.get("/v2/health/ready")
def ready() -> Response:
    # 503, not the protocol's 4xx: a readiness probe (and KServe's own server) reads
    # "not ready" as "send no traffic yet", which is what 503 means.
    ok = _v2().server_ready()
    return _json(json_codec.dumps({"ready": ok}), 200 if ok else 503)


@blueprint.get("/v2/models/<name>/ready")
@blueprint.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    # The protocol: 200 ready, 4xx not (Triton answers 400; KServe's client takes any
    # error status as "not ready"). An unknown model is a 404 error instead.
    ok = _v2().model_ready(name, version)
    return _json(json_codec.dumps({"name": name, "ready": ok}), 200 if ok else 400)


@blueprint.get("/v2/models/<name>")
@blueprint.get("/v2/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    return _json(_v2().model_metadata(name, version))


@blueprint.get("/v2/models/<name>/config")
@blueprint.get("/v2/models/<name>/versions/<version>/config")
def model_config(name: str, version: str | None = None) -> Response:
    return _json(_v2().model_config(name, version))


@blueprint.get("/v2/models/stats")
@blueprint.get("/v2/models/<name>/stats")
@blueprint.get("/v2/models/<name>/versions/<version>/stats")
def statistics(name: str | None = None, version: str | None = None) -> Response:
    return _json(_v2().statistics(name, version))


@blueprint.post("/v2/repository/index")
def repository_index() -> Response:
    return _json(_v2().repository_index(request.get_data(cache=False)))


@blueprint.post("/v2/repository/models/<name>/load")
@blueprint.post("/v2/repository/models/<name>/unload")
def model_control(name: str) -> NoReturn:
    _v2().model_control()


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
