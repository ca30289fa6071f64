"""Fuzzing: mutated requests against a real `tfkit serve` never get a 5xx or a dropped connection.

A seeded mutation fuzz sends several hundred bodies derived from valid ones
(byte edits, token swaps, structural edits) to every verb; a hypothesis test
feeds arbitrary JSON values through the in-process app.
"""

import copy
import gzip
import json
import random

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEED = 20240611
MUTANTS = 600
TIMEOUT = 30

ROW = {"island": "Dream", "bill_length_mm": 40.0, "body_mass_g": 3000.0}
# (URL path, a valid body): every verb and request layout the server speaks.
VALID = [
    ("/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}),
    ("/v1/models/half_plus_two:predict", {"inputs": {"x": [[1.0], [2.0]]}}),
    ("/v1/models/half_plus_two/versions/123:predict",
     {"signature_name": "serving_default", "instances": [[1.5]]}),
    ("/v1/models/half_plus_two:regress",
     {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": [2.0]}]}),
    ("/v1/models/half_plus_two:classify",
     {"signature_name": "classify_x_to_y", "context": {"x": 1.0}, "examples": [{}]}),
    ("/v1/models/mpg:predict", {"instances": [[1.0, 2.0, 3.0, 4.0], [0.0, 0.5, -1.0, 2.0]]}),
    ("/v1/models/penguins:predict", {"instances": [ROW, dict(ROW, island={"b64": "QmlzY29l"})]}),
    ("/v1/models/penguins:predict",
     {"inputs": {"island": ["Biscoe"], "bill_length_mm": [41.0], "body_mass_g": [4100.0]}}),
]
# Values that have broken JSON-to-tensor code somewhere.
NASTY_VALUES = [
    None, True, False, 0, -0.0, 1, -1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, 1e308,
    -1e308, 5e-324, float("nan"), float("inf"), "", "x" * 10_000, "\u0000", "\ud7ff\ue000",
    {}, [], [[]], [{}], {"b64": "!!"}, {"b64": ""}, {"b64": 3}, [1, "a"], [[1.0], 1.0],
    [[1.0, 2.0], [3.0]], {"instances": []}, [None] * 3, list(range(50)),
]
NASTY_BYTES = [
    b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80",
    b"NaN", b"-Infinity", b"Inf", b"1e999", b"-", b"9" * 400, b"null", b"true", b"\\u0000",
    b"\\ud800", b" " * 1000, b"[" * 200, b"]" * 200,
]


def _mutate_bytes(rng: random.Random, body: bytes) -> bytes:
    op = rng.randrange(6)
    i = rng.randrange(len(body) + 1)
    j = min(len(body), i + rng.randrange(1, 16))
    if op == 0:  # flip one byte
        if not body:
            return b"\xff"
        k = rng.randrange(len(body))
        return body[:k] + bytes([body[k] ^ (1 << rng.randrange(8))]) + body[k + 1:]
    if op == 1:  # insert something nasty
        return body[:i] + rng.choice(NASTY_BYTES) + body[i:]
    if op == 2:  # delete a span
        return body[:i] + body[j:]
    if op == 3:  # duplicate a span
        return body[:j] + body[i:j] + body[j:]
    if op == 4:  # truncate
        return body[:i]
    return body[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) + body[j:]


def _nodes(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*path, index))


def _mutate_structure(rng: random.Random, doc):
    doc = copy.deepcopy(doc)
    path = rng.choice(list(_nodes(doc)))
    if not path:
        return rng.choice([[doc], rng.choice(NASTY_VALUES), {"instances": doc}])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    op = rng.randrange(5)
    if op == 0:
        parent[key] = copy.deepcopy(rng.choice(NASTY_VALUES))
    elif op == 1:
        parent[key] = [parent[key]] * rng.choice([1, 2, 40])  # wrap: one level deeper
    elif op == 2 and isinstance(parent, dict):
        parent[key + rng.choice(["", "_", "\u00e9", "\x00"]) + "x"] = parent.pop(key)  # rename
    elif op == 3 and isinstance(parent, list):
        del parent[key]
    else:
        parent[key] = json.dumps(parent[key])  # the right value, as a string
    return doc


def _mutants(count: int):
    rng = random.Random(SEED)
    for _ in range(count):
        path, doc = rng.choice(VALID)
        if rng.random() < 0.5:
            body = json.dumps(_mutate_structure(rng, doc), allow_nan=True).encode()
        else:
            body = json.dumps(doc).encode()
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            body = _mutate_bytes(rng, body)
        headers = {"Content-Type": "application/json"}
        if rng.random() < 0.1:
            body = gzip.compress(body, mtime=0)  # no timestamp: the same bytes every run
            headers["Content-Encoding"] = "gzip"
            if rng.random() < 0.3:
                body = _mutate_bytes(rng, body)
        yield path, body, headers


def test_mutants_are_all_deterministic():
    assert list(_mutants(20)) == list(_mutants(20))


def test_mutation_fuzz_never_gets_5xx_or_drops_a_connection(tfkit_servers):
    server = tfkit_servers["open"]
    outcomes: dict[int, int] = {}
    failures = []
    with requests.Session() as session:  # one keep-alive connection: a drop would show
        for n, (path, body, headers) in enumerate(_mutants(MUTANTS)):
            try:
                response = session.post(server.url + path, data=body, headers=headers,
                                        timeout=TIMEOUT)
                doc = response.json()
            except (requests.RequestException, ValueError) as exc:
                failures.append((n, path, body[:200], repr(exc)))
                continue
            outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
            ok = response.status_code == 200 and isinstance(doc, dict) and "error" not in doc
            clear_error = (400 <= response.status_code < 500 and isinstance(doc, dict)
                           and set(doc) == {"error"} and isinstance(doc["error"], str))
            if not (ok or clear_error):
                failures.append((n, path, body[:200], response.status_code, doc))
    assert failures == []
    assert sum(outcomes.values()) == MUTANTS
    assert outcomes.get(200, 0) > MUTANTS // 10  # the fuzz also reaches the models
    assert outcomes.get(400, 0) > MUTANTS // 4
    assert "Unexpected error" not in server.log()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layout=st.sampled_from(["instances", "inputs", "examples"]),
    value=JSON,
    target=st.sampled_from(["half_plus_two:predict", "penguins:predict",
                            "half_plus_two:regress", "mpg:predict"]),
)
def test_any_json_value_gets_200_or_a_clear_400(client, layout, value, target):
    body = {layout: value}
    if target.endswith("regress"):
        body["signature_name"] = "regress_x_to_y"
    response = client.post(f"/v1/models/{target}",
                           data=json.dumps(body, allow_nan=True).encode())
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        assert set(response.json) == {"error"}


@pytest.mark.parametrize("size", [0, 1, 7, 100])
def test_random_bytes_get_a_clear_400(client, size):
    body = random.Random(size).randbytes(size)
    response = client.post("/v1/models/half_plus_two:predict", data=body)
    assert response.status_code == 400
    assert set(response.json) == {"error"}
