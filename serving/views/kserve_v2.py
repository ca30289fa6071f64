"""The Open Inference Protocol's REST routes (``/v2/...``), Triton's extensions included."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from serving import json_codec
from serving.errors import InvalidArgument
from serving.routes import Answer

EXTENSION = "tfkit_open_inference"
HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_LENGTH_KEY = "HTTP_INFERENCE_HEADER_CONTENT_LENGTH"  # its WSGI environ key

Extensions = Mapping[str, Any]
Environ = Mapping[str, Any]


def server_metadata(extensions: Extensions, environ: Environ, body: bytes) -> Answer:
    return Answer(extensions[EXTENSION].server_metadata())


def live(extensions: Extensions, environ: Environ, body: bytes) -> Answer:
    return Answer(json_codec.dumps({"live": True}))


def ready(extensions: Extensions, environ: Environ, body: bytes) -> Answer:
    # 503, not the protocol's 4xx: a readiness probe (and KServe's own server) reads
    # "not ready" as "send no traffic yet", which is what 503 means.
    ok = extensions[EXTENSION].server_ready()
    return Answer(json_codec.dumps({"ready": ok}), 200 if ok else 503)


def model_ready(extensions: Extensions, environ: Environ, body: bytes, name: str,
                version: str | None = None) -> Answer:
    # The protocol: 200 ready, 4xx not (Triton answers 400; KServe's client takes any
    # error status as "not ready"). An unknown model is a 404 error instead.
    ok = extensions[EXTENSION].model_ready(name, version)
    return Answer(json_codec.dumps({"name": name, "ready": ok}), 200 if ok else 400)


def model_metadata(extensions: Extensions, environ: Environ, body: bytes, name: str,
                   version: str | None = None) -> Answer:
    return Answer(extensions[EXTENSION].model_metadata(name, version))


def model_config(extensions: Extensions, environ: Environ, body: bytes, name: str,
                 version: str | None = None) -> Answer:
    return Answer(extensions[EXTENSION].model_config(name, version))


def statistics(extensions: Extensions, environ: Environ, body: bytes, name: str | None = None,
               version: str | None = None) -> Answer:
    return Answer(extensions[EXTENSION].statistics(name, version))


def repository_index(extensions: Extensions, environ: Environ, body: bytes) -> Answer:
    return Answer(extensions[EXTENSION].repository_index(body))


def model_control(extensions: Extensions, environ: Environ, body: bytes, name: str) -> NoReturn:
    extensions[EXTENSION].model_control()


def infer(extensions: Extensions, environ: Environ, body: bytes, name: str,
          version: str | None = None) -> Answer:
    # The body is JSON whatever the Content-Type says (tritonclient sends none).
    length = header_length(environ.get(HEADER_LENGTH_KEY))
    answer = extensions[EXTENSION].infer(name, version, body, length)
    if answer.header_length is None:
        return Answer(answer.body)
    return Answer(answer.body, content_type="application/octet-stream",
                  headers=((HEADER_LENGTH, str(answer.header_length)),))


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
