"""TF Serving's REST routes (``/v1/models/...``): parse the URL, call the core, send its bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.errors import InvalidArgument
from serving.routes import Answer, path_of

EXTENSION = "tfkit_serving"  # where the app keeps the inference core in app.extensions
_VERBS = ("predict", "classify", "regress")


def status(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes, name: str,
           version: str | None = None, label: str | None = None) -> Answer:
    return Answer(extensions[EXTENSION].status(name, version, label))


def metadata(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes, name: str,
             version: str | None = None, label: str | None = None) -> Answer:
    return Answer(extensions[EXTENSION].metadata(name, version, label))


def infer(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes,
          target: str) -> Answer:
    name, verb = _split_verb(target, environ)
    return Answer(getattr(extensions[EXTENSION], verb)(name, body))


def infer_version(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes,
                  name: str, target: str) -> Answer:
    version, verb = _split_verb(target, environ)
    return Answer(getattr(extensions[EXTENSION], verb)(name, body, version=version))


def infer_label(extensions: Mapping[str, Any], environ: Mapping[str, Any], body: bytes,
                name: str, target: str) -> Answer:
    label, verb = _split_verb(target, environ)
    return Answer(getattr(extensions[EXTENSION], verb)(name, body, label=label))


def _split_verb(target: str, environ: Mapping[str, Any]) -> tuple[str, str]:
    head, _, verb = target.rpartition(":")
    if not head or verb not in _VERBS:
        raise InvalidArgument(f"Malformed request: POST {path_of(environ)}")
    return head, verb
