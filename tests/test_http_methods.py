"""Which methods each URL takes: 405 answers carry ``Allow``, and ``OPTIONS`` lists exactly
the methods that are served (RFC 9110 15.5.6, 9.3.7), on a real server and in-process."""

import http.client
import json

import pytest

from serving import methods

TIMEOUT = 30
INFER = "POST, OPTIONS"
READ = "GET, HEAD, OPTIONS"
PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

# (path, the Allow it must get); every model here is in the hardening repository too.
URLS = [
    ("/v1/models/half_plus_two:predict", INFER),
    ("/v1/models/half_plus_two:classify", INFER),
    ("/v1/models/half_plus_two:regress", INFER),
    ("/v1/models/half_plus_two/versions/123:predict", INFER),
    ("/v1/models/half_plus_two/labels/stable:regress", INFER),
    ("/v2/models/half_plus_two/infer", INFER),
    ("/v2/models/half_plus_two/versions/123/infer", INFER),
    ("/v1/models/half_plus_two", READ),
    ("/v1/models/half_plus_two/versions/123", READ),
    ("/v1/models/half_plus_two/labels/stable", READ),
    ("/v1/models/half_plus_two/metadata", READ),
    ("/v1/models/half_plus_two/versions/123/metadata", READ),
    ("/v2/models/half_plus_two", READ),
    ("/v2/models/half_plus_two/versions/123/ready", READ),
    ("/v2/health/live", READ),
    ("/v2", READ),
    ("/monitoring/prometheus/metrics", READ),
    ("/openapi.json", READ),
]


@pytest.fixture(scope="module")
def server(tfkit_servers):
    return tfkit_servers["open"]  # `tfkit serve`: gunicorn, the direct path on


def send(server, method, path):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=b"" if method in ("GET", "HEAD") else b"{}")
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(("path", "allow"), URLS, ids=[u[0] for u in URLS])
def test_options_and_405_agree_with_what_is_served(server, path, allow):
    status, headers, _ = send(server, "OPTIONS", path)
    assert status == 200
    assert headers["Allow"] == allow
    for method in PROBED:
        status, headers, body = send(server, method, path)
        if method in allow.split(", "):
            assert status != 405, (method, body)
        else:
            assert status == 405, (method, status, body)
            assert headers["Allow"] == allow
            assert headers["Content-Type"] == "application/json"
            if method != "HEAD":  # a HEAD answer has no body
                assert f"Method {method} is not allowed" in json.loads(body)["error"]


def test_get_on_an_inference_url_names_post(server):
    status, headers, body = send(server, "GET", "/v1/models/half_plus_two:predict")
    assert status == 405
    assert headers["Allow"] == INFER
    assert json.loads(body) == {"error": "Method GET is not allowed for "
                                         "/v1/models/half_plus_two:predict: it takes POST"}


def test_unknown_method_on_a_status_url(server):
    status, headers, _ = send(server, "PURGE", "/v1/models/half_plus_two")
    assert status == 405
    assert headers["Allow"] == READ


@pytest.mark.parametrize(("path", "allow"), URLS, ids=[u[0] for u in URLS])
def test_in_process_options(client, path, allow):
    response = client.options(path)
    assert response.status_code == 200
    assert response.headers["Allow"] == allow


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/models/half_plus_two:predict", INFER),
    ("DELETE", "/v2/models/half_plus_two/infer", INFER),
    ("POST", "/v1/models/half_plus_two", READ),
    ("POST", "/v1/models/half_plus_two/metadata", READ),
])
def test_in_process_405_carries_allow(client, method, path, allow):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert set(response.json) == {"error"}


@pytest.fixture(scope="module")
def cors_app(model_config_file):
    from serving import create_app

    return create_app({"MODEL_CONFIG_FILE": str(model_config_file),
                       "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
                       "CORS_ALLOWED_ORIGINS": "https://app.example.com"})


@pytest.mark.parametrize(("path", "allow"), [
    ("/v1/models/half_plus_two:predict", INFER),
    ("/v2/models/half_plus_two/infer", INFER),
    ("/v1/models/half_plus_two/metadata", READ),
])
def test_cors_preflight_names_the_url_s_methods(cors_app, path, allow):
    response = cors_app.test_client().options(path, headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["Access-Control-Allow-Methods"] == allow
    assert response.headers["Allow"] == allow


def test_cors_request_after_preflight_still_works(cors_app):
    response = cors_app.test_client().post(
        "/v1/models/half_plus_two:predict", json={"instances": [1.0]},
        headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_allow_header_order_is_fixed():
    assert methods.allow_header({"OPTIONS", "POST"}) == "POST, OPTIONS"
    assert methods.allow_header(["OPTIONS", "HEAD", "GET"]) == "GET, HEAD, OPTIONS"
