"""The OpenAPI document of both REST APIs, served as kept in ``serving/openapi.json``."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from typing import Any

from serving.routes import Answer


@functools.cache
def _document() -> bytes:
    """The OpenAPI 3.0 document, read once from the package."""
    return importlib.resources.files("serving").joinpath("openapi.json").read_bytes()


def document(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes) -> Answer:
    return Answer(_document())
