"""The OpenAPI document: served as kept, all routes documented, each answers as documented."""

import json
import pathlib
import re

import pytest

DOCUMENT = pathlib.Path(__file__).resolve().parents[1] / "serving" / "openapi.json"
_VERBS = ("predict", "classify", "regress")
_X = [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]
_CLASSIFY = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}
_REGRESS = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}

# One concrete request per documented operation, against the shared test app's models.
REQUESTS = {
    ("get", "/v1/models/{name}"): ("/v1/models/half_plus_two", None),
    ("get", "/v1/models/{name}/versions/{version}"): ("/v1/models/two_versions/versions/123", None),
    ("get", "/v1/models/{name}/labels/{label}"): ("/v1/models/two_versions/labels/stable", None),
    ("get", "/v1/models/{name}/metadata"): ("/v1/models/half_plus_two/metadata", None),
    ("get", "/v1/models/{name}/versions/{version}/metadata"):
        ("/v1/models/two_versions/versions/124/metadata", None),
    ("get", "/v1/models/{name}/labels/{label}/metadata"):
        ("/v1/models/two_versions/labels/canary/metadata", None),
    ("post", "/v1/models/{name}:predict"):
        ("/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0]}),
    ("post", "/v1/models/{name}/versions/{version}:predict"):
        ("/v1/models/two_versions/versions/123:predict", {"instances": [1.0]}),
    ("post", "/v1/models/{name}/labels/{label}:predict"):
        ("/v1/models/two_versions/labels/stable:predict", {"inputs": [1.0]}),
    ("post", "/v1/models/{name}:classify"):
        ("/v1/models/half_plus_two:classify", _CLASSIFY),
    ("post", "/v1/models/{name}/versions/{version}:classify"):
        ("/v1/models/half_plus_two/versions/123:classify", _CLASSIFY),
    ("post", "/v1/models/{name}/labels/{label}:classify"):
        ("/v1/models/two_versions/labels/stable:classify", _CLASSIFY),
    ("post", "/v1/models/{name}:regress"):
        ("/v1/models/half_plus_two:regress", _REGRESS),
    ("post", "/v1/models/{name}/versions/{version}:regress"):
        ("/v1/models/half_plus_two/versions/123:regress", _REGRESS),
    ("post", "/v1/models/{name}/labels/{label}:regress"):
        ("/v1/models/two_versions/labels/canary:regress", _REGRESS),
    ("get", "/monitoring/prometheus/metrics"): ("/monitoring/prometheus/metrics", None),
    ("get", "/v2"): ("/v2", None),
    ("get", "/v2/health/live"): ("/v2/health/live", None),
    # The shared app serves bad_half_plus_two, which never loads: not ready.
    ("get", "/v2/health/ready"): ("/v2/health/ready", None, "503"),
    ("get", "/v2/models/{name}/ready"): ("/v2/models/half_plus_two/ready", None),
    ("get", "/v2/models/{name}/versions/{version}/ready"):
        ("/v2/models/half_plus_two/versions/123/ready", None),
    ("get", "/v2/models/{name}"): ("/v2/models/mpg", None),
    ("get", "/v2/models/{name}/versions/{version}"):
        ("/v2/models/half_plus_two/versions/123", None),
    ("post", "/v2/models/{name}/infer"): ("/v2/models/half_plus_two/infer", {"inputs": _X}),
    ("post", "/v2/models/{name}/versions/{version}/infer"):
        ("/v2/models/half_plus_two/versions/123/infer", {"inputs": _X}),
    ("get", "/v2/models/{name}/config"): ("/v2/models/half_plus_two/config", None),
    ("get", "/v2/models/{name}/versions/{version}/config"):
        ("/v2/models/half_plus_two/versions/123/config", None),
    ("get", "/v2/models/stats"): ("/v2/models/stats", None),
    ("get", "/v2/models/{name}/stats"): ("/v2/models/half_plus_two/stats", None),
    ("get", "/v2/models/{name}/versions/{version}/stats"):
        ("/v2/models/half_plus_two/versions/123/stats", None),
    ("post", "/v2/repository/index"): ("/v2/repository/index", {"ready": True}),
    ("post", "/v2/repository/models/{name}/load"):
        ("/v2/repository/models/half_plus_two/load", None, "409"),
    ("post", "/v2/repository/models/{name}/unload"):
        ("/v2/repository/models/half_plus_two/unload", None, "409"),
    ("get", "/openapi.json"): ("/openapi.json", None),
}


@pytest.fixture(scope="module")
def document():
    return json.loads(DOCUMENT.read_text())


def _operations(document):
    return {(method, path) for path, item in document["paths"].items() for method in item}


def _normalized(path: str) -> str:
    """A path with its parameters blanked, and ':verb' folded into the segment before it."""
    path = re.sub(r"\{[^}]+\}(:(" + "|".join(_VERBS) + "))?", "*", path)
    return re.sub(r"<[^>]+>", "*", path)


def test_served_document_is_the_kept_file(client, document):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json == document
    assert document["openapi"].startswith("3.")


def test_every_route_is_documented_and_every_documented_route_exists(app, document):
    served = {
        (method.lower(), _normalized(rule.rule))
        for rule in app.url_map.iter_rules() if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(method, _normalized(path)) for method, path in _operations(document)}
    assert served == documented


def test_each_operation_has_a_concrete_request(document):
    assert _operations(document) == set(REQUESTS)


def _resolve(document, ref: str):
    node = document
    for part in ref.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def test_every_reference_resolves(document):
    refs = set(re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(document)))
    assert len(refs) >= 3  # the document does share its schemas by reference
    unresolved = sorted(ref for ref in refs if not isinstance(_resolve(document, ref), dict))
    assert unresolved == [], f"$refs that point nowhere: {unresolved}"


@pytest.mark.parametrize("operation", sorted(REQUESTS), ids=lambda o: f"{o[0]} {o[1]}")
def test_operation_answers_as_documented(client, document, operation):
    method, template = operation
    path, body, status = (*REQUESTS[operation], "200")[:3]
    response = client.open(path, method=method.upper(), json=body)
    spec = document["paths"][template][method]
    assert str(response.status_code) == status, response.data[:300]
    documented = spec["responses"][status]
    if "$ref" in documented:
        documented = _resolve(document, documented["$ref"].removeprefix("#/"))
    content = documented.get("content")
    if content is None:
        assert response.data == b""
        return
    assert response.mimetype in content
    schema = content[response.mimetype]["schema"]
    if "$ref" in schema and isinstance(response.json, dict):
        name = schema["$ref"].rsplit("/", 1)[1]
        required = document["components"]["schemas"][name].get("required", [])
        properties = document["components"]["schemas"][name].get("properties", {})
        assert set(required) <= set(response.json)
        assert set(response.json) <= set(properties)


@pytest.mark.parametrize("template, path, body, status", [
    ("/v1/models/{name}:predict", "/v1/models/nope:predict", {"instances": [1.0]}, "404"),
    ("/v1/models/{name}:predict", "/v1/models/half_plus_two:predict", {}, "400"),
    ("/v2/models/{name}/infer", "/v2/models/nope/infer", {"inputs": _X}, "404"),
    ("/v2/models/{name}/infer", "/v2/models/half_plus_two/infer", {"inputs": []}, "400"),
])
def test_errors_are_documented(client, document, template, path, body, status):
    response = client.post(path, json=body)
    assert str(response.status_code) == status
    assert status in document["paths"][template]["post"]["responses"]
    assert set(response.json) == {"error"}
