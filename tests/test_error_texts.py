"""No error a client sees shows the server's insides: graph nodes, paths, reprs, tracebacks.

Many bad requests (wrong dtype, wrong shape, missing and extra inputs, strings to
float inputs, lists nested too deep or not deep enough) go to every signature of
TF Serving's reference models and to tfkit-exported models, by every verb, in the
TF Serving and the Open Inference formats; each answer is checked, in process and
over HTTP from a real server.
"""

import json

import pytest
import requests

# What only the server's own debugging needs; none may reach a client.
LEAKS = ("{{node", "{{function_node", "[[", "/tmp/", "site-packages", "dist-packages",
         " object at 0x", "Traceback", "[Op:", ".py\"", ".py:", "defined at")
# (model, signature): the signatures of the models in conftest's model_repo.
SIGNATURES = [
    ("half_plus_two", "serving_default"),
    ("half_plus_two", "regress_x2_to_y3"),
    ("half_plus_two", "regress_x_to_y"),
    ("half_plus_two", "regress_x_to_y2"),
    ("half_plus_two", "classify_x_to_y"),
    ("half_plus_three", "serving_default"),
    ("half_plus_three", "tensorflow/serving/regress"),
    ("half_plus_two_tf2", "serving_default"),
    ("half_plus_two_tf2", "regress_x2_to_y3"),
    ("half_plus_two_tf2", "classify_x2_to_y3"),
    ("half_plus_two_tf2", "regress_x_to_y"),
    ("half_plus_two_tf2", "classify_x_to_y"),
    ("two_versions", "classify_x2_to_y3"),
    ("penguins", "serving_default"),
    ("mpg", "serving_default"),
]
ROW = {"island": "Dream", "bill_length_mm": 40.0, "body_mass_g": 3000.0}
# Values for one input, each wrong somewhere for most signatures.
BAD_VALUES = [
    "a", ["a", "b"], [["a"]], [True], [None], [[1.0, 2.0, 3.0]], [[[1.0]]], [[[[1.0]]]],
    [[1.0], [2.0, 3.0]], [[1.0], 2.0], [1.0, [2.0]], {"b64": "AAAA"}, [{"b64": "AAAA"}],
    [1e40], [[1.0, 2.0, 3.0, 4.0, 5.0]], [[1.0, 2.0]], [{"a": 1}], [], [[]],
]
BAD_EXAMPLES = [
    [{"x": 1.0}], [{"x2": 1.0}], [{"x": "a"}], [{"x": [1.0, 2.0]}], [{}], [{"x": None}],
    [{"x": {"b64": "AAAA"}}], [{"x": [[1.0]]}], [{"inputs": 1.0}], [1.0], [[1.0]], "x",
    [{"x": True}], [{"x": 1.0, "y": "b"}],
]


def _bad_requests() -> list[tuple[str, dict]]:
    """(path, body) pairs, all wrong in one way or another."""
    cases = []
    for model, signature in SIGNATURES:
        predict = f"/v1/models/{model}:predict"
        names = ["island", "bill_length_mm", "body_mass_g"] if model == "penguins" else None
        for value in BAD_VALUES:
            cases.append((predict, {"signature_name": signature, "instances": value}))
            cases.append((predict, {"signature_name": signature, "inputs": value}))
            alias = names[0] if names else ("x" if signature == "serving_default" else "inputs")
            cases.append((predict, {"signature_name": signature, "inputs": {alias: value}}))
            cases.append((predict, {"signature_name": signature,
                                    "inputs": {alias: value, "extra": [1.0]}}))
            if names:
                cases.append((predict, {"instances": [dict(ROW, bill_length_mm=value)]}))
                cases.append((predict, {"instances": [dict(ROW, island=value)]}))
        cases.append((predict, {"signature_name": signature}))  # neither inputs nor instances
        cases.append((predict, {"signature_name": signature, "inputs": {"nope": [1.0]}}))
        cases.append((predict, {"signature_name": signature, "instances": [{"nope": 1.0}]}))
        for verb in ("regress", "classify"):
            for examples in BAD_EXAMPLES:
                cases.append((f"/v1/models/{model}:{verb}",
                              {"signature_name": signature, "examples": examples}))
    for model, name in (("half_plus_two", "x"), ("mpg", "features"), ("penguins", "island")):
        for datatype, shape, data in (("FP32", [1, 1], ["a"]), ("FP32", [1, 3], [1.0]),
                                      ("BYTES", [1, 1], ["a"]), ("INT64", [2, 2], [1, 2, 3, 4]),
                                      ("FP32", [1, 1, 1, 1], [1.0]), ("BOOL", [1], [True])):
            cases.append((f"/v2/models/{model}/infer", {
                "inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}))
    return cases


BAD_REQUESTS = _bad_requests()


def _check(path: str, body: dict, status: int, answer: dict) -> None:
    where = f"{path} {json.dumps(body)} -> {status} {answer}"
    assert status < 500, where  # a client's mistake, never the server's
    error = answer.get("error", "")
    if status >= 400:
        assert error, where
    for leak in LEAKS:
        assert leak not in error, where


def test_bad_requests_in_process_show_no_server_insides(client):
    answered = 0
    for path, body in BAD_REQUESTS:
        response = client.post(path, json=body)
        _check(path, body, response.status_code, response.json)
        answered += 1
    assert answered == len(BAD_REQUESTS) > 1000


@pytest.fixture(scope="module")
def server(model_repo, start_server):
    return start_server(["--models", str(model_repo), "--workers", "1"],
                        "/v1/models/half_plus_two")


def test_bad_requests_over_http_show_no_server_insides(server):
    with requests.Session() as session:
        for path, body in BAD_REQUESTS:
            response = session.post(server.url + path, json=body, timeout=30)
            _check(path, body, response.status_code, response.json())


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        # The regress_x2_to_y3 signature takes floats; :regress feeds it serialized examples.
        ("/v1/models/half_plus_two:regress",
         {"signature_name": "regress_x2_to_y3", "examples": [{"x2": 1.0}]}, 400,
         "Input 'inputs' takes DT_FLOAT values, but was fed DT_STRING. :classify and "
         ":regress feed serialized tf.Example strings; for this signature, call :predict "
         "with its \"signature_name\" instead"),
        ("/v1/models/two_versions:classify",
         {"signature_name": "classify_x2_to_y3", "examples": [{"x": 1.0}]}, 400,
         "Input 'inputs' takes DT_FLOAT values, but was fed DT_STRING"),
        ("/v1/models/half_plus_two:predict", {"signature_name": "regress_x2_to_y3"}, 400,
         "Missing 'inputs' or 'instances' key"),
        ("/v1/models/half_plus_two:predict",
         {"signature_name": "regress_x2_to_y3", "instances": ["a"]}, 400,
         'JSON Value: "a" Type: String is not of expected type: DT_FLOAT'),
        ("/v1/models/penguins:predict",
         {"inputs": {"bill_length_mm": [40.0], "body_mass_g": [3000.0]}}, 400,
         "Missing named input: island in 'inputs' object."),
        ("/v1/models/mpg:predict", {"instances": [[1.0, 2.0]]}, 400,
         "Input 'features' was sent with shape [1,2] but the signature expects [-1,4]"),
        ("/v1/models/half_plus_two:classify",
         {"signature_name": "classify_x_to_y", "examples": [{"x": "a"}]}, 400,
         "Key: x, Index: 0. Data types don't match."),
    ],
)
def test_specific_error_texts(client, path, body, status, message):
    response = client.post(path, json=body)
    assert response.status_code == status, response.json
    assert message in response.json["error"]
    _check(path, body, response.status_code, response.json)
