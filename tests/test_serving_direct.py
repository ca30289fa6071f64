"""Inference routes answered straight from WSGI give exactly the Flask routes' answers."""

import gzip
import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import PENGUIN_ROWS, b64

TOKEN = "direct-path-token"


def _example(x: float) -> bytes:
    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _binary_v2() -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    data = np.array([1.0, 2.0], np.float32).tobytes()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def _penguin_rows() -> list[dict]:
    columns = {k: [v if isinstance(v, str) else float(v) for v in values]
               for k, values in PENGUIN_ROWS.items()}
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


BINARY_BODY, BINARY_HEADERS = _binary_v2()
JSON = {"Content-Type": "application/json"}

# (path, body, headers, expected status): answered directly unless the request is of a
# kind the direct path leaves to Flask (see DIRECT below).
REQUESTS = {
    "predict rows": ("/v1/models/half_plus_two:predict",
                     {"instances": [1.0, 2.0, 5.0]}, JSON, 200),
    "predict columns": ("/v1/models/half_plus_two:predict", {"inputs": [1.0, 2.0]}, JSON, 200),
    "predict version": ("/v1/models/two_versions/versions/124:predict",
                        {"instances": [1.0]}, JSON, 200),
    "predict label": ("/v1/models/two_versions/labels/stable:predict",
                      {"instances": [1.0]}, JSON, 200),
    "penguins rows": ("/v1/models/penguins:predict", {"instances": _penguin_rows()}, JSON, 200),
    "classify": ("/v1/models/half_plus_two:classify",
                 {"examples": [{"x": 1.0}], "signature_name": "classify_x_to_y"}, JSON, 200),
    "regress": ("/v1/models/half_plus_two:regress",
                {"examples": [{"x": 1.0}, {"x": 4.0}], "signature_name": "regress_x_to_y"},
                JSON, 200),
    "regress label": ("/v1/models/two_versions/labels/canary:regress",
                      {"examples": [{"x": 1.0}], "signature_name": "regress_x_to_y"}, JSON, 200),
    "b64 strings": ("/v1/models/half_plus_two:predict",
                    {"signature_name": "classify_x_to_y",
                     "instances": [b64(_example(2.0))]},
                    JSON, 200),
    "no content type": ("/v1/models/half_plus_two:predict", {"instances": [1.0]}, {}, 200),
    "v2 json": ("/v2/models/half_plus_two/infer",
                {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",
                             "data": [1.0, 2.0]}]}, {}, 200),
    "v2 version": ("/v2/models/two_versions/versions/123/infer",
                   {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [3.0]}]},
                   JSON, 200),
    "v2 binary": ("/v2/models/half_plus_two/infer", BINARY_BODY, BINARY_HEADERS, 200),
    "unknown model": ("/v1/models/nope:predict", {"instances": [1.0]}, JSON, 404),
    "unknown version": ("/v1/models/half_plus_two/versions/7:predict",
                        {"instances": [1.0]}, JSON, 404),
    "bad version": ("/v1/models/half_plus_two/versions/99999999999999999999:predict",
                    {"instances": [1.0]}, JSON, 400),
    "not json": ("/v1/models/half_plus_two:predict", b"{not json", JSON, 400),
    "wrong type": ("/v1/models/half_plus_two:predict", {"instances": ["a"]}, JSON, 400),
    "too deep": ("/v1/models/half_plus_two:predict", {"instances": [[[[[[[[1.0]]]]]]]]},
                 JSON, 400),
    "too large": ("/v1/models/half_plus_two:predict", {"instances": [1.0] * 400}, JSON, 413),
    "v2 unknown model": ("/v2/models/nope/infer",
                         {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                      "data": [1.0]}]}, {}, 404),
    "v2 bad header length": ("/v2/models/half_plus_two/infer", BINARY_BODY,
                             {"Inference-Header-Content-Length": "many"}, 400),
    "unknown verb": ("/v1/models/half_plus_two:explain", {"instances": [1.0]}, JSON, 400),
    "gzip": ("/v1/models/half_plus_two:predict", gzip.compress(b'{"instances": [1.0]}'),
             {**JSON, "Content-Encoding": "gzip"}, 200),
    "non-ascii name": ("/v1/models/h\u00e9:predict", {"instances": [1.0]}, JSON, 404),
}
# Left to Flask: a path that is not ASCII.
DIRECT = set(REQUESTS) - {"non-ascii name"}


def _apps(model_config_file, **config):
    from serving import create_app

    base = {"MODEL_CONFIG_FILE": str(model_config_file), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
            "TESTING": True, "MAX_CONTENT_LENGTH": 1024, "MAX_JSON_DEPTH": 6, **config}
    return create_app(base), create_app({**base, "DIRECT_INFERENCE": False})


@pytest.fixture(scope="module")
def apps(model_config_file):
    return _apps(model_config_file)


@pytest.fixture(scope="module")
def token_apps(model_config_file):
    return _apps(model_config_file, AUTH_TOKEN=TOKEN)


def _counting(app):
    """Wraps the direct path's ``answer`` so the test knows which requests it answered."""
    answered = []
    direct = app.wsgi_app.answer

    def call(environ, start_response):
        answer = direct(environ, start_response)
        answered.append(answer is not None)
        return answer

    app.wsgi_app.answer = call
    return answered, direct


def _send(app, path, body, headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = app.test_client().post(path, data=data, headers=headers)
    return response.status_code, dict(response.headers), response.get_data()


@pytest.mark.parametrize("case", list(REQUESTS))
def test_same_answer_as_flask(apps, case):
    direct_app, flask_app = apps
    path, body, headers, status = REQUESTS[case]
    answered, original = _counting(direct_app)
    try:
        direct = _send(direct_app, path, body, headers)
    finally:
        direct_app.wsgi_app.answer = original
    through_flask = _send(flask_app, path, body, headers)
    assert direct[0] == status, direct[2]
    assert direct == through_flask
    assert answered == [case in DIRECT]


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("Bearer wrong", 401), ("Basic abc", 401), (f"Bearer {TOKEN}", 200),
])
def test_token_checked_as_on_flask_routes(token_apps, header, status):
    direct_app, flask_app = token_apps
    headers = {} if header is None else {"Authorization": header}
    path, body = "/v1/models/half_plus_two:predict", {"instances": [1.0]}
    direct = _send(direct_app, path, body, headers)
    assert direct[0] == status
    assert direct == _send(flask_app, path, body, headers)
    if status == 401:
        assert direct[1]["WWW-Authenticate"] == 'Bearer realm="tfkit"'


def test_cors_requests_go_through_flask(model_config_file):
    direct_app, _ = _apps(model_config_file, CORS_ALLOWED_ORIGINS="https://app.example")
    answered, _ = _counting(direct_app)
    status, headers, _ = _send(direct_app, "/v1/models/half_plus_two:predict",
                               {"instances": [1.0]}, {"Origin": "https://app.example"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert answered == [False]


def test_requests_counted_once_in_metrics(apps):
    direct_app, _ = apps
    client = direct_app.test_client()
    metric = ':tensorflow:serving:request_count{model_name="half_plus_three",status="OK"}'

    def count():
        text = client.get("/monitoring/prometheus/metrics").get_data(as_text=True)
        lines = [line for line in text.splitlines() if line.startswith(metric)]
        return int(lines[0].split()[-1]) if lines else 0

    before = count()
    for _ in range(3):
        assert client.post("/v1/models/half_plus_three:predict",
                           json={"instances": [1.0]}).status_code == 200
    assert count() == before + 3
