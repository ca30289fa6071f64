"""The OpenAPI document of both REST APIs, served as kept in ``serving/openapi.json``."""

from __future__ import annotations

import functools
import importlib.resources

from flask import Blueprint, Response

blueprint = Blueprint("openapi", __name__)


@functools.cache
def document() -> bytes:
    """The OpenAPI 3.0 document, read once from the package."""
    return importlib.resources.files("serving").joinpath("openapi.json").read_bytes()


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return Response(document(), mimetype="application/json")
