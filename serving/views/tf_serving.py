"""TF Serving's REST routes (``/v1/models/...``): parse the URL, call the core, send its bytes."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from serving.errors import InvalidArgument

blueprint = Blueprint("tf_serving", __name__)

EXTENSION = "tfkit_serving"  # where the app keeps the inference core in app.extensions
_VERBS = ("predict", "classify", "regress")


def _core():
    return current_app.extensions[EXTENSION]


def _json(body: bytes) -> Response:
    return Response(body, mimetype="application/json")


@blueprint.get("/v1/models/<name>")
@blueprint.get("/v1/models/<name>/versions/<version>")
@blueprint.get("/v1/models/<name>/labels/<label>")
def status(name: str, version: str | None = None, label: str | None = None) -> Response:
    return _json(_core().status(name, version, label))


@blueprint.get("/v1/models/<name>/metadata")
@blueprint.get("/v1/models/<name>/versions/<version>/metadata")
@blueprint.get("/v1/models/<name>/labels/<label>/metadata")
def metadata(name: str, version: str | None = None, label: str | None = None) -> Response:
    return _json(_core().metadata(name, version, label))


# ":predict" is part of the last path segment, so the verb is split off in the view.
@blueprint.post("/v1/models/<target>")
def infer_latest(target: str) -> Response:
    name, verb = _split_verb(target)
    return _infer(verb, name)


@blueprint.post("/v1/models/<name>/versions/<target>")
def infer_version(name: str, target: str) -> Response:
    version, verb = _split_verb(target)
    return _infer(verb, name, version=version)


@blueprint.post("/v1/models/<name>/labels/<target>")
def infer_label(name: str, target: str) -> Response:
    label, verb = _split_verb(target)
    return _infer(verb, name, label=label)


def _split_verb(target: str) -> tuple[str, str]:
    head, _, verb = target.rpartition(":")
    if not head or verb not in _VERBS:
        raise InvalidArgument(f"Malformed request: POST {request.path}")
    return head, verb


def _infer(verb: str, name: str, **where: str) -> Response:
    return _json(getattr(_core(), verb)(name, request.get_data(cache=False), **where))
