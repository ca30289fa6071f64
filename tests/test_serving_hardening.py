"""Hostile input against a real `tfkit serve` process: every bad request gets a clear 4xx.

Also: request limits, gzip bodies, a bearer token, CORS, a burst of concurrent
clients, graceful SIGTERM, and a secret beside the model repository that no
request can reach.
"""

import gzip
import http.client
import json
import os
import pathlib
import signal
import socket
import threading

import numpy as np
import pytest
import requests
from conftest import HARDENING_SECRET as SECRET
from conftest import HARDENING_TOKEN as TOKEN
from conftest import wait_for

from serving import encoding, limits, security
from serving.errors import InvalidArgument, PayloadTooLarge

AUTH = {"Authorization": f"Bearer {TOKEN}"}
HALF = "/v1/models/half_plus_two"
PREDICT = HALF + ":predict"
MIB = 1024 * 1024
TIMEOUT = 30


# --- fixtures (the repository and the servers are in conftest: the fuzz tests share them) ---


@pytest.fixture(scope="module")
def served(secret_repo):
    return secret_repo


@pytest.fixture(scope="module")
def server(tfkit_servers):
    return tfkit_servers["open"]


@pytest.fixture(scope="module")
def token_server(tfkit_servers):
    return tfkit_servers["token"]


def send(server, method, path, body=b"", headers=None):
    """One request over a fresh connection, the path sent exactly as written."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def assert_clear_error(status, headers, body, expected_status, fragment, served):
    assert status == expected_status, body[:500]
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert set(doc) == {"error"}
    assert fragment in doc["error"]
    assert_nothing_leaks(body, served)


def assert_nothing_leaks(body, served):
    text = body.decode("utf-8", "replace")
    assert SECRET not in text
    assert str(served) not in text  # no server path
    assert "Traceback" not in text and 'File "' not in text


# --- the battery ------------------------------------------------------------------------

# Valid gzip, cut short; and ~20 MiB of JSON that compresses to ~80 KiB.
TRUNCATED_GZIP = gzip.compress(b'{"instances": [1.0, 2.0]}')[:-6]
GZIP_BOMB = gzip.compress(b'{"instances": [' + b"1.0," * (20 * MIB) + b"1.0]}")

BATTERY = [
    # (id, method, path, body, headers, status, fragment in the error)
    ("nested-lists", "POST", PREDICT, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     {}, 400, "JSON nesting is deeper than 32 levels"),
    ("nested-objects", "POST", PREDICT, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
     {}, 400, "max_json_depth"),
    ("invalid-utf8", "POST", PREDICT, b'{"instances": ["\xff\xfe"]}', {}, 400,
     "JSON Parse error"),
    ("invalid-utf8-key", "POST", PREDICT, b'{"inst\xc3\x28nces": [1.0]}', {}, 400,
     "JSON Parse error"),
    ("booleans-for-floats", "POST", PREDICT, b'{"instances": [true, false]}', {}, 400,
     "Type: True is not of expected type: DT_FLOAT"),
    ("strings-for-floats", "POST", PREDICT, b'{"instances": ["1.0"]}', {}, 400,
     'JSON Value: "1.0" Type: String is not of expected type: DT_FLOAT'),
    ("null-for-float", "POST", PREDICT, b'{"inputs": [[1.0], [null]]}', {}, 400,
     "Type: Null is not of expected type: DT_FLOAT"),
    ("wrong-width", "POST", "/v1/models/mpg:predict", b'{"instances": [[1.0, 2.0, 3.0]]}',
     {}, 400, "Input 'features' was sent with shape [1,3] but the signature expects [-1,4]"),
    ("ragged-rows", "POST", PREDICT, b'{"instances": [[1.0], [1.0, 2.0]]}', {}, 400,
     "Expecting tensor size: 1 but got: 2"),
    ("null-instances", "POST", PREDICT, b'{"instances": null}', {}, 400,
     "Excepting 'instances' to be an list/array"),
    ("object-instances", "POST", PREDICT, b'{"instances": {"x": [1.0]}}', {}, 400,
     "Excepting 'instances' to be an list/array"),
    ("string-instances", "POST", PREDICT, b'{"instances": "1.0"}', {}, 400,
     "Excepting 'instances' to be an list/array"),
    ("top-level-array", "POST", PREDICT, b"[1.0, 2.0]", {}, 400, "Is not object"),
    ("top-level-string", "POST", PREDICT, b'"instances"', {}, 400, "Is not object"),
    ("empty-body", "POST", PREDICT, b"", {}, 400, "The document is empty"),
    ("integer-beyond-double", "POST", PREDICT, b'{"instances": [' + b"9" * 400 + b"]}", {}, 400,
     "Number too big to be stored in double"),
    ("integer-of-100k-digits", "POST", PREDICT, b'{"instances": [' + b"9" * 100_000 + b"]}", {},
     400, "Number too big to be stored in double"),
    ("exponent-beyond-double", "POST", PREDICT, b'{"instances": [1e999]}', {}, 400,
     "Number too big to be stored in double"),
    ("too-many-rows", "POST", PREDICT, b'{"instances": [' + b"1.0," * 70_000 + b"1.0]}", {},
     400, "at most 65536 per request (max_batch_rows)"),
    ("unknown-verb", "POST", HALF + ":explain", b'{"instances": [1.0]}', {}, 400,
     "Malformed request: POST /v1/models/half_plus_two:explain"),
    ("get-on-predict", "GET", PREDICT, b"", {}, 405, "it takes POST"),
    ("put-on-predict", "PUT", PREDICT, b'{"instances": [1.0]}', {}, 405, "not allowed"),
    ("unknown-method", "PURGE", HALF, b"", {}, 405, "not allowed"),
    ("traversal-in-name", "GET", "/v1/models/..%2F..%2Fsecret_model", b"", {}, 404, "not found"),
    ("traversal-in-name-predict", "POST", "/v1/models/..%2Fsecret_model:predict",
     b'{"instances": [1.0]}', {}, 404, "not found"),
    ("dotdot-name", "GET", "/v1/models/..", b"", {}, 404,
     "Could not find any versions of model .."),
    ("dotdot-metadata", "GET", "/v1/models/../secret_model/metadata", b"", {}, 404, "not found"),
    ("encoded-dotdot-name", "POST", "/v1/models/%2e%2e:predict", b'{"instances": [1.0]}', {},
     404, "Servable not found for request: Latest(..)"),
    ("nul-in-name", "GET", "/v1/models/half_plus_two%00", b"", {}, 404,
     "Could not find any versions of model half_plus_two\x00"),
    ("nul-in-version", "POST", HALF + "/versions/123%00:predict", b'{"instances": [1.0]}', {},
     400, "Failed to convert version"),
    ("traversal-in-version", "POST", HALF + "/versions/..%2F..%2F123:predict",
     b'{"instances": [1.0]}', {}, 404, "not found"),
    ("dotdot-version", "POST", HALF + "/versions/..:predict", b'{"instances": [1.0]}', {}, 400,
     "Failed to convert version: .. to numeric"),
    ("negative-version", "POST", HALF + "/versions/-1:predict", b'{"instances": [1.0]}', {}, 400,
     "Expected a version number from 0 to 9223372036854775807"),
    ("overflowing-version", "POST", HALF + "/versions/9223372036854775808:predict",
     b'{"instances": [1.0]}', {}, 400, "Failed to convert version: 9223372036854775808"),
    ("absurdly-long-version", "GET", HALF + "/versions/" + "9" * 3000, b"", {}, 400,
     "Failed to convert version"),
    ("unicode-digit-version", "GET", HALF + "/versions/%C2%B2", b"", {}, 400,
     "Failed to convert version"),
    ("absurdly-long-name", "GET", "/v1/models/" + "a" * 3000, b"", {}, 404,
     "Could not find any versions of model aaa"),
    ("traversal-in-label", "GET", HALF + "/labels/..%2F..%2Fsecret.txt", b"", {}, 404,
     "not found"),
    ("unsupported-encoding", "POST", PREDICT, b'{"instances": [1.0]}',
     {"Content-Encoding": "br"}, 415, "Content-Encoding 'br' is not supported"),
    ("not-gzip", "POST", PREDICT, b'{"instances": [1.0]}', {"Content-Encoding": "gzip"}, 400,
     "not valid gzip data"),
    ("truncated-gzip", "POST", PREDICT, TRUNCATED_GZIP, {"Content-Encoding": "gzip"}, 400,
     "gzip body is truncated"),
    ("gzip-bomb", "POST", PREDICT, GZIP_BOMB, {"Content-Encoding": "gzip"}, 413,
     "the server accepts at most 64 MiB"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment"),
    [case[1:] for case in BATTERY], ids=[case[0] for case in BATTERY],
)
def test_hostile_request_gets_a_clear_4xx(server, served, method, path, body, headers, status,
                                         fragment):
    answer = send(server, method, path, body, headers)
    assert_clear_error(*answer, status, fragment, served)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # TF Serving's parser (RapidJSON, kParseNanAndInfFlag) takes these tokens.
        (b'{"instances": [NaN, Infinity, -Infinity]}', "[NaN, Infinity, -Infinity]"),
        # A huge integer literal is read as a double, as RapidJSON and TF Serving read it.
        (b'{"instances": [123456789012345678901234567890]}', "[6.1728395e+28]"),
    ],
    ids=["nan-infinity-tokens", "huge-integer"],
)
def test_tokens_tf_serving_accepts(server, body, expected):
    status, _, answer = send(server, "POST", PREDICT, body)
    assert status == 200, answer
    assert answer.decode().replace(" ", "") == '{"predictions":' + expected.replace(" ", "") + "}"


def test_gzip_body_is_accepted(server):
    body = gzip.compress(json.dumps({"instances": [1.0, 2.0, 5.0]}).encode())
    status, _, answer = send(server, "POST", PREDICT, body, {"Content-Encoding": "gzip"})
    assert status == 200, answer
    assert json.loads(answer) == {"predictions": [2.5, 3.0, 4.5]}


def test_70_mib_body_is_refused_before_it_is_read(server, served):
    """Only the headers and the body's first bytes are sent: an answer at all shows the server
    decided from Content-Length, without waiting for (or reading) the 70 MiB."""
    length = len(b'{"instances": [') + len(b"1.0,") * (70 * MIB // 4) + len(b"1.0]}")
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + b'{"instances": [1.0,')
        response = http.client.HTTPResponse(sock)
        response.begin()  # a server reading the body first would time out here
        status, headers, content = response.status, dict(response.getheaders()), response.read()
    assert_clear_error(status, headers, content, 413,
                       "Request body is 70 MiB; the server accepts at most 64 MiB", served)
    assert requests.get(server.url + HALF, timeout=TIMEOUT).status_code == 200  # still serving


def test_70_mib_chunked_body_is_refused(server, served):
    def chunks():  # no Content-Length: the server must count
        yield b'{"instances": ['
        for _ in range(70):
            yield b"1.0," * (MIB // 4)
        yield b"1.0]}"

    response = requests.post(server.url + PREDICT, data=chunks(), timeout=TIMEOUT)
    assert_clear_error(response.status_code, response.headers, response.content, 413,
                       "Request body is over 64 MiB", served)


def test_status_of_a_broken_version_names_no_server_path(server, served):
    status, _, body = send(server, "GET", "/v1/models/bad_half_plus_two")
    assert status == 200
    (version,) = json.loads(body)["model_version_status"]
    assert version["state"] == "END"
    assert "bad_half_plus_two/00000123" in version["status"]["error_message"]
    assert_nothing_leaks(body, served)


@pytest.mark.parametrize(
    "path",
    ["/v1/models/..%2Fsecret.txt", "/v1/models/../secret.txt", "/v1/models/secret.txt",
     "/v1/models/secret_model", "/v1/models/..%2Fsecret_model/metadata",
     "/v1/models/half_plus_two/versions/123/..%2F..%2F..%2Fsecret.txt",
     "/v1/models/half_plus_two%2F..%2F..%2Fsecret_model", "/..%2Fsecret.txt", "/secret.txt",
     "/v1/models/%2e%2e%2fsecret_model%2f00000123%2fassets%2fsecret.txt"],
)
def test_nothing_outside_the_repository_is_served(server, served, path):
    for method in ("GET", "POST"):
        status, _, body = send(server, method, path, b'{"instances": [1.0]}')
        assert status in (400, 404, 405), body
        assert_nothing_leaks(body, served)


def test_server_logged_no_unexpected_error(server, served):
    send(server, "POST", PREDICT, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert "Unexpected error" not in server.log()
    assert "Traceback" not in server.log()


# --- token -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "fragment"),
    [
        ({}, 401, "requires a bearer token"),
        ({"Authorization": "Bearer wrong-token"}, 401, "The bearer token is not valid"),
        ({"Authorization": f"Bearer {TOKEN}x"}, 401, "The bearer token is not valid"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "must use the Bearer scheme"),
        ({"Authorization": "Bearer"}, 401, "must use the Bearer scheme"),
        (AUTH, 200, None),
        ({"Authorization": f"bearer {TOKEN}"}, 200, None),
    ],
    ids=["none", "wrong", "longer", "basic", "empty", "right", "lowercase-scheme"],
)
def test_token_guards_predictions(token_server, served, headers, status, fragment):
    code, answer_headers, body = send(token_server, "POST", PREDICT, b'{"instances": [1.0]}',
                                      headers)
    if fragment is None:
        assert code == status, body
        assert json.loads(body) == {"predictions": [2.5]}
    else:
        assert_clear_error(code, answer_headers, body, status, fragment, served)
        assert answer_headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path", "open_without_token"),
    [
        ("GET", HALF, True),  # the model status is TF Serving's health check
        ("HEAD", HALF, True),
        ("GET", "/v2/health/live", True),  # KServe's probes: exempt whether or not served
        ("GET", "/v2/health/ready", True),
        ("GET", HALF + "/metadata", False),
        ("GET", HALF + "/versions/123", False),
        ("GET", "/monitoring/prometheus/metrics", False),
        ("GET", "/v1/models/half_plus_two:predict", False),  # a name has no ":" (TF Serving)
        ("GET", "/no/such/route", False),
    ],
)
def test_token_leaves_only_health_checks_open(token_server, method, path, open_without_token):
    status, _, _ = send(token_server, method, path)
    assert (status != 401) == open_without_token
    status, _, _ = send(token_server, method, path, headers=AUTH)
    assert status != 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", HALF, b""), ("GET", HALF + "/metadata", b""),
     ("POST", PREDICT, b'{"instances": [1.0]}'), ("GET", "/monitoring/prometheus/metrics", b"")],
)
def test_without_a_token_everything_is_open(server, method, path, body):
    status, _, answer = send(server, method, path, body)
    assert status == 200, answer


def test_token_is_checked_before_the_body_is_read(token_server, served):
    body = gzip.compress(b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    answer = send(token_server, "POST", PREDICT, body, {"Content-Encoding": "gzip"})
    assert_clear_error(*answer, 401, "requires a bearer token", served)


# --- burst and graceful shutdown ---------------------------------------------------------

BURST_CLIENTS = 64
BURST_REQUESTS = 25


def test_burst_of_64_concurrent_clients(server):
    start = threading.Barrier(BURST_CLIENTS)
    outcomes: list[list[tuple[int, object]]] = [[] for _ in range(BURST_CLIENTS)]

    def client(i: int) -> None:
        with requests.Session() as session:
            start.wait(timeout=TIMEOUT)
            for j in range(BURST_REQUESTS):
                x = float(i * BURST_REQUESTS + j)
                try:
                    r = session.post(server.url + PREDICT, json={"instances": [x]},
                                     timeout=TIMEOUT)
                    outcomes[i].append((r.status_code, r.json()["predictions"][0] - x / 2))
                except (requests.RequestException, ValueError, KeyError) as exc:
                    outcomes[i].append((0, repr(exc)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(BURST_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    flat = [o for per_client in outcomes for o in per_client]
    assert len(flat) == BURST_CLIENTS * BURST_REQUESTS
    assert [o for o in flat if o[0] != 200] == []
    assert {o[1] for o in flat} == {2.0}  # every answer is y = x/2 + 2 for its own x


def _wait_for(condition, seconds: float = TIMEOUT) -> bool:
    return wait_for(condition, seconds)


def _accepted_by_a_worker(server, client_port: int) -> bool:
    """Whether a worker process holds the server's end of our connection (it accepted it)."""
    inodes = set()
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.split(":")[1], 16) for f in fields[1:3])
        if local == server.port and remote == client_port:
            inodes.add(f"socket:[{fields[9]}]")
    master = server.process.pid
    children = pathlib.Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        try:
            fds = list(pathlib.Path(f"/proc/{pid}/fd").iterdir())
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return True
            except FileNotFoundError:
                pass
    return False


def _accepting(server) -> bool:
    try:
        requests.get(server.url + HALF, timeout=2)
    except requests.RequestException:
        return False
    return True


def test_sigterm_finishes_in_flight_request_then_exits(tfkit_servers):
    server = tfkit_servers["sigterm"]
    body = json.dumps({"instances": [1.0, 2.0, 3.0]}).encode()
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body[:10])  # the request is in flight, its body half sent
        assert _wait_for(lambda: _accepted_by_a_worker(server, sock.getsockname()[1]))
        server.process.send_signal(signal.SIGTERM)
        assert _wait_for(lambda: not _accepting(server)), "still accepting after SIGTERM"
        sock.sendall(body[10:])
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert answer.endswith(b'{"predictions":[2.5,3.0,3.5]}')
    assert server.process.wait(timeout=TIMEOUT) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


# --- CORS (in-process: the hooks are the same on every server) --------------------------


@pytest.fixture(scope="module")
def cors_client(served):
    from serving import create_app

    app = create_app({
        "MODELS": str(served / "models"), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
        "CORS_ALLOWED_ORIGINS": "https://app.example.com, https://admin.example.com:8443",
        "AUTH_TOKEN": TOKEN,
    })
    return app.test_client()


def test_cors_is_off_by_default(client):
    response = client.post(PREDICT, json={"instances": [1.0]},
                           headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options(PREDICT, headers={"Origin": "https://app.example.com",
                                                 "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_preflight_from_an_allowed_origin_needs_no_token(cors_client):
    response = cors_client.options(PREDICT, headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://app.example.com", True), ("https://admin.example.com:8443", True),
     ("https://evil.example.com", False), ("https://app.example.com.evil.net", False),
     ("null", False)],
)
def test_cors_allows_only_listed_origins(cors_client, origin, allowed):
    response = cors_client.post(PREDICT, json={"instances": [1.0]},
                                headers={"Origin": origin, **AUTH})
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
    assert "Origin" in response.headers.get_all("Vary")
    preflight = cors_client.options(PREDICT, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST"})
    assert (preflight.status_code == 204) == allowed  # else it needs the token: 401


def test_errors_carry_cors_and_nosniff_headers(cors_client):
    response = cors_client.post(PREDICT, data=b"[1.0]",
                                headers={"Origin": "https://app.example.com", **AUTH})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- configuration and the pure functions behind the hooks -------------------------------


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ({"AUTH_TOKEN": "  "}, {}, "The auth token is empty"),
        ({"AUTH_TOKEN": "has space"}, {}, "must be letters, digits"),
        ({"AUTH_TOKEN": "a", "AUTH_TOKEN_FILE": "/nonexistent"}, {}, "not both"),
        ({"AUTH_TOKEN_FILE": "/nonexistent/token"}, {}, "Cannot read the auth token file"),
        ({"CORS_ALLOWED_ORIGINS": ["app.example.com"]}, {}, "must look like https://host"),
        ({}, {"TFKIT_AUTH_TOKEN": ""}, "The auth token is empty"),
    ],
)
def test_bad_security_config_stops_the_server_at_start(served, monkeypatch, config, env,
                                                       message):
    from serving import create_app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        create_app({"MODELS": str(served / "models"), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
                    **config})


@pytest.mark.parametrize("text", ["null", "12345", "true"])
def test_token_from_env_is_taken_as_text(served, monkeypatch, text):
    """Flask's from_prefixed_env JSON-decodes values; "null" must not switch auth off."""
    from serving import create_app

    monkeypatch.setenv("TFKIT_AUTH_TOKEN", text)
    app = create_app({"MODELS": str(served / "models"), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})
    client = app.test_client()
    assert client.post(PREDICT, json={"instances": [1.0]}).status_code == 401
    ok = client.post(PREDICT, json={"instances": [1.0]},
                     headers={"Authorization": f"Bearer {text}"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("version", "status"),
    [("123", 200), ("00000123", 200), ("0" * 40 + "123", 200),  # leading zeros, as int64 parsing
     ("9223372036854775807", 404), ("9223372036854775808", 400), ("1" + "0" * 5000, 400),
     ("+123", 400), (" 123", 400), ("١٢٣", 400)],
)
def test_versions_are_int64_in_ascii_digits(client, version, status):
    response = client.post(f"{HALF}/versions/{version}:predict", json={"instances": [1.0]})
    assert response.status_code == status, response.json


def test_limits_follow_the_config(served):
    from serving import create_app

    app = create_app({"MODELS": str(served / "models"), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
                      "MAX_JSON_DEPTH": 3, "MAX_BATCH_ROWS": 2, "MAX_CONTENT_LENGTH": 1000})
    client = app.test_client()
    assert client.post(PREDICT, json={"instances": [[1.0]]}).status_code == 200  # depth 3
    deep = client.post(PREDICT, json={"instances": [[[1.0]]]})
    assert deep.status_code == 400 and "deeper than 3 levels" in deep.json["error"]
    rows = client.post(PREDICT, json={"instances": [1.0, 2.0, 3.0]})
    assert rows.status_code == 400 and "at most 2 per request" in rows.json["error"]
    columns = client.post(PREDICT, json={"inputs": [1.0, 2.0, 3.0]})
    assert columns.status_code == 400 and "Request has 3 rows" in columns.json["error"]
    big = client.post(PREDICT, data=gzip.compress(b'{"instances": [' + b" " * 2000 + b"1]}"),
                      headers={"Content-Encoding": "gzip"})
    assert big.status_code == 413 and "at most 1000 bytes" in big.json["error"]


@pytest.mark.parametrize(
    ("text", "limit", "exceeds"),
    [
        (b"1", 0, False),
        (b"[]", 0, True),
        (b"[[1]]", 2, False),
        (b"[[[1]]]", 2, True),
        (b'{"a": {"b": [1]}}', 3, False),
        (b'{"a": {"b": [[1]]}}', 3, True),
        (b'["[[[[", "]]]]]]", "{{{{"]', 1, False),  # brackets in strings do not count
        (b'["\\"[[[[", "\\\\", [["x"]]]', 3, False),  # escaped quote, escaped backslash
        (b'["\\\\"]' + b"[" * 5, 3, True),  # after an escaped backslash the string ends
        (b"[" * (5 * (1 << 22)) + b"]", 10, True),  # spans several scan chunks
        (b"[" * 5 + b" " * (1 << 22) + b"]" * 5 + b"[[[1]]]", 5, False),
    ],
)
def test_nesting_scan(text, limit, exceeds):
    assert limits.nesting_exceeds(text, limit) is exceeds
    try:
        depth = _parsed_depth(json.loads(text))
    except (ValueError, RecursionError):
        return
    assert (depth > limit) is exceeds


def _parsed_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_parsed_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_parsed_depth, value.values()), default=0)
    return 0


def test_nesting_scan_matches_the_parser_on_random_documents():
    rng = np.random.default_rng(0)
    for _ in range(200):
        doc = _random_json(rng, depth=0)
        text = json.dumps(doc).encode()
        depth = _parsed_depth(doc)
        assert not limits.nesting_exceeds(text, depth)
        if depth > 0:
            assert limits.nesting_exceeds(text, depth - 1)


def _random_json(rng, depth):
    kind = rng.integers(0, 6 if depth < 8 else 3)
    if kind == 0:
        return float(rng.normal())
    if kind == 1:
        return "".join(rng.choice(list('ab[]{}"\\,: \u00e9'), size=rng.integers(0, 6)))
    if kind == 2:
        return None
    if kind in (3, 4):
        return [_random_json(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    return {str(i) + '"[': _random_json(rng, depth + 1) for i in range(rng.integers(0, 4))}


def test_gunzip_caps_output_and_reads_concatenated_members():
    assert encoding.inflate(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 4) == b"abcd"
    with pytest.raises(PayloadTooLarge):
        encoding.inflate(gzip.compress(b"ab") + gzip.compress(b"cde"), "gzip", 4)
    with pytest.raises(InvalidArgument, match="truncated"):
        encoding.inflate(gzip.compress(b"abc" * 100)[:20], "gzip", 1000)
    with pytest.raises(InvalidArgument, match="not valid gzip"):
        encoding.inflate(gzip.compress(b"abc") + b"trailing junk", "gzip", 1000)


def test_scrub_paths_replaces_whole_server_paths_only():
    message = "open /srv/models/a/1/x.pb failed; /srv/models2 kept; POST /v1/models/a:predict"
    assert security.scrub_paths(message, ["/srv/models", "models"]) == (
        "open <server path>/a/1/x.pb failed; /srv/models2 kept; POST /v1/models/a:predict"
    )


def test_serve_flags_reach_the_app_config(secret_repo):
    import argparse

    from serving.cli import _access_config, add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    token_file = str(secret_repo / "token")
    args = parser.parse_args(["--max-json-depth", "8", "--max-batch-rows", "0",
                              "--auth-token-file", token_file,
                              "--cors-allowed-origins", "https://a.example.com"])
    assert _access_config(args) == {
        "MAX_JSON_DEPTH": 8, "MAX_BATCH_ROWS": 0, "AUTH_TOKEN_FILE": token_file,
        "CORS_ALLOWED_ORIGINS": "https://a.example.com",
    }
    assert _access_config(parser.parse_args([])) == {}
    with pytest.raises(ValueError, match="not a readable file"):
        _access_config(parser.parse_args(["--auth-token-file", "/nonexistent/token"]))


def test_serve_binds_loopback_by_default():
    import argparse

    from serving.cli import DEFAULT_HOST, add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert parser.parse_args([]).host == DEFAULT_HOST == "127.0.0.1"
