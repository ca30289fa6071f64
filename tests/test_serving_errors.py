"""Every TF Serving REST error case answers with its status code and a useful JSON error."""

import pytest

P = "/v1/models/half_plus_two:predict"
PENGUINS = "/v1/models/penguins:predict"
REGRESS = "/v1/models/half_plus_two:regress"
CLASSIFY = "/v1/models/half_plus_two:classify"
ROW = {"island": "Dream", "bill_length_mm": 40.0, "body_mass_g": 3000.0}


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "fragment"),
    [
        # unknown model / version / label / signature
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/half_plus_two/versions/7", None, 404,
         "Could not find version 7 of model half_plus_two"),
        ("GET", "/v1/models/half_plus_two/versions/x", None, 400,
         "Failed to convert version: x to numeric."),
        ("GET", "/v1/models/two_versions/labels/nope", None, 400,
         "Unrecognized servable version label: nope"),
        ("GET", "/v1/models/nope/metadata", None, 404,
         "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/nope:predict", {"instances": [1.0]}, 404,
         "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/half_plus_two/versions/7:predict", {"instances": [1.0]}, 404,
         "Servable not found for request: Specific(half_plus_two, 7)"),
        ("POST", P, {"signature_name": "nope", "instances": [1.0]}, 400,
         'Serving signature name: "nope" not found in signature def'),
        ("POST", P, {"signature_name": 3, "instances": [1.0]}, 400,
         "'signature_name' key must be a string value"),
        ("POST", "/v1/models/half_plus_two:explain", {"instances": [1.0]}, 400,
         "Malformed request: POST /v1/models/half_plus_two:explain"),
        # malformed or empty JSON
        ("POST", P, b"", 400, "JSON Parse error: The document is empty"),
        ("POST", P, b"{\"instances\": [1.0", 400, "JSON Parse error"),
        ("POST", P, b"[1.0, 2.0]", 400, "Is not object"),
        # instances / inputs
        ("POST", P, {"instances": [1.0], "inputs": [1.0]}, 400,
         "expecting only one of 'inputs' or 'instances' keys to exist"),
        ("POST", P, {"signature_name": "serving_default"}, 400,
         "Missing 'inputs' or 'instances' key"),
        ("POST", P, {"instances": []}, 400, "No values in 'instances' array"),
        ("POST", P, {"instances": 1.0}, 400, "Excepting 'instances' to be an list/array"),
        # input names
        ("POST", P, {"instances": [{"y": 1.0}]}, 400, "does not have named input: y"),
        ("POST", P, {"inputs": {"y": [1.0]}}, 400, "Missing named input: x in 'inputs' object."),
        ("POST", PENGUINS, {"instances": [{"island": "Dream"}]}, 400,
         "keys must be equal to: bill_length_mm,body_mass_g,island"),
        ("POST", PENGUINS, {"instances": ["Dream"]}, 400,
         "expecting list of objects as multiple input tensors"),
        ("POST", PENGUINS, {"inputs": ["Dream"]}, 400,
         "expecting an object as multiple input tensors"),
        ("POST", PENGUINS, {"instances": [ROW, [1.0]]}, 400,
         "Expecting object but got list at item 1"),
        # dtypes
        ("POST", P, {"instances": ["a", "b"]}, 400,
         'JSON Value: "a" Type: String is not of expected type: DT_FLOAT'),
        ("POST", P, {"inputs": [[True], [False]]}, 400,
         "Type: True is not of expected type: DT_FLOAT"),
        ("POST", P, {"inputs": [[1.0], [{"a": 1}]]}, 400, "Type: Object is not of expected type"),
        ("POST", PENGUINS, {"instances": [dict(ROW, island=3)]}, 400,
         "key: island of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 3 Type: Number "
         "is not of expected type: DT_STRING"),
        ("POST", PENGUINS, {"instances": [dict(ROW, island={"b64": "%%%"})]}, 400,
         "Unable to base64 decode"),
        # ragged
        ("POST", P, {"instances": [[1.0], [2.0, 3.0]]}, 400,
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting tensor size: 1 but got: 2"),
        ("POST", P, {"inputs": [[1.0], [2.0, 3.0]]}, 400,
         "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
        ("POST", P, {"inputs": [[1.0], 2.0]}, 400, "found at incorrect level"),
        # classify / regress
        ("POST", REGRESS, {"signature_name": "regress_x_to_y"}, 400,
         "key 'examples' is expected and was not found"),
        ("POST", REGRESS, {"signature_name": "regress_x_to_y", "examples": []}, 400,
         "'examples' value is an empty array"),
        ("POST", REGRESS, {"signature_name": "regress_x_to_y", "examples": {"x": 1.0}}, 400,
         "Expecting 'examples' value to be an list/array"),
        ("POST", REGRESS, {"signature_name": "regress_x_to_y", "examples": [1.0]}, 400,
         "Example must be JSON object but got JSON Number"),
        ("POST", REGRESS, {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
         400, "Unexpected element type in feature: x expecting type: float"),
        ("POST", REGRESS, {"examples": [{"x": 1.0}]}, 400,
         "Expected regression signature method_name to be tensorflow/serving/regress. "
         "Was: tensorflow/serving/predict"),
        ("POST", CLASSIFY, {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}, 400,
         "Expected classification signature method_name to be tensorflow/serving/classify"),
        ("POST", "/v1/models/half_plus_two_tf2:classify",
         {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}, 400,
         "Was: tensorflow/serving/predict"),
        ("POST", REGRESS, {"signature_name": "regress_x_to_y", "examples": [{"y": 1.0}]}, 400,
         "Feature: x (data type: float) is required but could not be found"),
        # Flask's own answers are JSON too
        ("GET", "/v2/nothing", None, 404, "not found"),
        ("DELETE", "/v1/models/half_plus_two", None, 405, "not allowed"),
    ],
)
def test_error_answers(client, method, url, body, status, fragment):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = client.open(url, method=method, **({} if body is None else kwargs))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert set(response.json) == {"error"}
    assert fragment in response.json["error"]
    assert "Traceback" not in response.json["error"]


def test_too_large_body_is_refused(app):
    client = app.test_client()
    limit = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 64
    try:
        response = client.post(P, data=b'{"instances": [' + b"1.0," * 50 + b"1.0]}")
    finally:
        app.config["MAX_CONTENT_LENGTH"] = limit
    assert response.status_code == 413
    assert response.content_type == "application/json"
    assert "error" in response.json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Matrix size-incompatible: In[0]: [1,2], In[1]: [4,8]\n\t [[{{node MatMul}}]]",
         "Matrix size-incompatible: In[0]: [1,2], In[1]: [4,8]"),
        ("Incompatible shapes: [2] vs. [3] [Op:AddV2] name: ", "Incompatible shapes: [2] vs. [3]"),
        ("Could not parse example input, value: 'a'\n\t [[{{function_node __inference_f_12}}"
         "{{node ParseExample/ParseExample}}]]", "Could not parse example input, value: 'a'"),
        ("bad value\n\nErrors may have originated from an input operation.\nInput Source "
         "operations connected to node x:\n In[0] x (defined at /srv/app/model.py:3)",
         "bad value"),
        ("failed: Traceback (most recent call last):\n  File \"/usr/lib/python3/site-packages/"
         "tf/ops.py\", line 1\nValueError: x", "failed:"),
        ("cannot use <tensorflow.python.framework.ops.Graph object at 0x7f3a2c1b>",
         "cannot use <object>"),
        ("Failed to read /tmp/models/half/1/variables/variables.index: no such file",
         "Failed to read <path>: no such file"),
    ],
)
def test_tensorflow_texts_lose_what_only_the_server_needs(text, expected):
    from serving.errors import client_message

    assert client_message(text) == expected


def test_a_dtype_mismatch_names_the_request_input():
    from serving.errors import from_tf_error

    error = from_tf_error(
        ValueError("Type mismatch: actual int64 vs. expect float\n\t [[{{node _arg_x2_0_1}}]]"),
        [("x:0", "x"), ("x2:0", "inputs")],
    )
    assert error.message == "Input 'inputs' takes DT_FLOAT values, but was fed DT_INT64"
