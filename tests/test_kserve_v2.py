"""The Open Inference Protocol (KServe V2): tritonclient and raw HTTP against a real server."""

import concurrent.futures
import json

import numpy as np
import pytest
import requests
from conftest import MLP_CLASSES, PENGUIN_ROWS, triton_http_client

try:  # only the tritonclient tests need it; raw HTTP and the in-process client do not
    import tritonclient.http as tritonclient_http
    from tritonclient.utils import InferenceServerException
except ImportError:
    tritonclient_http = InferenceServerException = None

TIMEOUT = 10


@pytest.fixture(scope="module")
def server(v2_repo, start_server):
    return start_server(["--models", str(v2_repo), "--file_system_poll_wait_seconds", "0"],
                        "/v2/health/ready")


@pytest.fixture(scope="module")
def triton(server):
    yield from triton_http_client(server, TIMEOUT)


def _features(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, 32)).astype(np.float32)


def test_tritonclient_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("mlp")
    assert triton.is_model_ready("mlp", "1")
    assert not triton.is_model_ready("mlp", "7")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    metadata = triton.get_model_metadata("mlp")
    assert metadata["name"] == "mlp" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 32]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        "class_ids": ("INT64", [-1]), "classes": ("BYTES", [-1]),
        "probabilities": ("FP32", [-1, 2]),
    }


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infer(triton, mlp, binary):
    x = _features(3)
    tensor = tritonclient_http.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [tritonclient_http.InferRequestedOutput(name, binary_data=binary)
               for name in ("probabilities", "classes", "class_ids")]
    result = triton.infer("mlp", [tensor], outputs=outputs, request_id="r-1")
    expected = mlp(x).numpy()
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5, rtol=0)
    ids = expected.argmax(axis=1)
    np.testing.assert_array_equal(result.as_numpy("class_ids"), ids)
    assert [c.decode() if isinstance(c, bytes) else c for c in result.as_numpy("classes")] \
        == [MLP_CLASSES[i] for i in ids]
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_defaults_are_binary_both_ways(triton):
    tensor = tritonclient_http.InferInput("x", [3, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[1.0], [2.0], [5.0]], np.float32))  # binary by default
    result = triton.infer("half_plus_two", [tensor], model_version="123")  # all outputs binary
    assert result.get_output("y")["parameters"] == {"binary_data_size": 12}
    np.testing.assert_array_equal(result.as_numpy("y"), [[2.5], [3.0], [4.5]])


def test_tritonclient_sees_server_errors(triton):
    tensor = tritonclient_http.InferInput("x", [1, 1], "FP64")
    tensor.set_data_from_numpy(np.array([[1.0]]))
    with pytest.raises(InferenceServerException, match="unexpected datatype FP64"):
        triton.infer("half_plus_two", [tensor])
    with pytest.raises(InferenceServerException, match="not found"):
        triton.get_model_metadata("no_such_model")


def test_raw_json_without_content_type(server):
    body = {"id": "42", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                    "data": [[1.0, 2.0], [3.0, 4.0]]}]}
    response = requests.post(f"{server.url}/v2/models/half_plus_two/infer",
                             data=json.dumps(body).encode(), timeout=TIMEOUT)
    assert "Content-Type" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "model_name": "half_plus_two", "model_version": "123", "id": "42",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 2],
                     "data": [2.5, 3.0, 3.5, 4.0]}],
    }
    assert requests.get(f"{server.url}/v2", timeout=TIMEOUT).json()["name"] == "tfkit"


@pytest.mark.parametrize("path, status, answer", [
    ("/v2/health/live", 200, {"live": True}),
    ("/v2/health/ready", 200, {"ready": True}),
    ("/v2/models/mlp/ready", 200, {"name": "mlp", "ready": True}),
    ("/v2/models/mlp/versions/1/ready", 200, {"name": "mlp", "ready": True}),
    ("/v2/models/mlp/versions/7/ready", 400, {"name": "mlp", "ready": False}),
])
def test_health_answers_are_json(server, path, status, answer):
    response = requests.get(server.url + path, timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (status, answer)
    assert response.headers["Content-Type"] == "application/json"


def test_32_concurrent_clients_over_http(server, mlp):
    """Each client's rows come back to it, whether merged with others or not."""
    inputs = [_features(1 + i % 4, seed=i) for i in range(32)]

    def v2(x):
        body = {"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.ravel().tolist()}], "outputs": [{"name": "probabilities"}]}
        response = requests.post(f"{server.url}/v2/models/mlp/infer", json=body, timeout=TIMEOUT)
        return np.reshape(response.json()["outputs"][0]["data"], (len(x), 2))

    def v1(x):
        response = requests.post(f"{server.url}/v1/models/mlp:predict",
                                 json={"instances": x.tolist()}, timeout=TIMEOUT)
        return np.array([row["probabilities"] for row in response.json()["predictions"]])

    calls = [v1 if i % 2 else v2 for i in range(32)]
    alone = [call(x) for call, x in zip(calls, inputs, strict=True)]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for _ in range(3):
            together = list(pool.map(lambda i: calls[i](inputs[i]), range(32)))
            for got, want, x in zip(together, alone, inputs, strict=True):
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
                np.testing.assert_allclose(got, mlp(x).numpy(), atol=1e-5, rtol=0)


# In-process: the error answers.


def _infer(client, model, body, **kwargs):
    return client.post(f"/v2/models/{model}/infer", data=json.dumps(body), **kwargs)


def _x(data, shape, datatype="FP32", name="x"):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize("body, message", [
    (_x([1.0], [1, 1], "FP64"), "unexpected datatype FP64 for inference input 'x', expecting FP32"),
    (_x([1.0, 2.0], [1, 1]), "2 elements of data for shape [1, 1]"),
    (_x([[1.0], [2.0, 3.0]], [2, 1]), "ragged"),
    (_x(["a"], [1, 1]), "does not fit FP32"),
    (_x([1.0], [1, -1]), "shape must be a list of non-negative ints"),
    (_x([1.0], [1, 1], name="y"), "unexpected inference input 'y' for model 'half_plus_two'"),
    ({"inputs": []}, "'inputs' must be a non-empty list"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "neither data nor"),
    ({**_x([1.0], [1, 1]), "outputs": [{"name": "z"}]}, "unexpected inference output 'z'"),
    ({**_x([1.0], [1, 1]), "parameters": {"signature_name": "nope"}}, '"nope" not found'),
])
def test_bad_requests_are_400_with_a_message(client, body, message):
    response = _infer(client, "half_plus_two", body)
    assert response.status_code == 400
    assert message in response.json["error"]


def test_binary_input_sizes_are_checked(client):
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    data = np.array([1.0, 2.0], np.float32).tobytes()
    ok = client.post("/v2/models/half_plus_two/infer", data=header + data,
                     headers={"Inference-Header-Content-Length": str(len(header))})
    assert ok.status_code == 200 and ok.json["outputs"][0]["data"] == [2.5, 3.0]
    short = client.post("/v2/models/half_plus_two/infer", data=header + data[:4],
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "beyond" in short.json["error"]
    extra = client.post("/v2/models/half_plus_two/infer", data=header + data + b"xx",
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert extra.status_code == 400 and "2 bytes of binary data follow" in extra.json["error"]
    bad = client.post("/v2/models/half_plus_two/infer", data=header + data,
                      headers={"Inference-Header-Content-Length": "many"})
    assert bad.status_code == 400


def test_string_and_several_inputs(client, table_classifier):
    body = {"inputs": [
        {"name": name, "shape": [4], "datatype": "BYTES" if values.dtype == object else "FP32",
         "data": [v if isinstance(v, str) else float(v) for v in values]}
        for name, values in PENGUIN_ROWS.items()
    ], "outputs": [{"name": "probabilities"}]}
    response = _infer(client, "penguins", body)
    assert response.status_code == 200, response.json
    expected = table_classifier({k: v.reshape(-1, 1) for k, v in PENGUIN_ROWS.items()}).numpy()
    (output,) = response.json["outputs"]
    assert output["shape"] == [4, 3]
    np.testing.assert_allclose(np.reshape(output["data"], (4, 3)), expected, atol=1e-5, rtol=0)


def test_unknown_models_and_readiness(client):
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert _infer(client, "nope", _x([1.0], [1, 1])).status_code == 404
    assert client.get("/v2/models/half_plus_two/ready").json == {
        "name": "half_plus_two", "ready": True}
    not_ready = client.get("/v2/models/half_plus_two/versions/9/ready")
    assert (not_ready.status_code, not_ready.json) == (
        400, {"name": "half_plus_two", "ready": False})
    # bad_half_plus_two is configured but failed to load: the server is not ready.
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json) == (503, {"ready": False})
    assert client.get("/v2/health/live").json == {"live": True}


def test_no_model_is_not_ready(tmp_path):
    from serving import create_app

    app = create_app({"MODELS": str(tmp_path), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})
    response = app.test_client().get("/v2/health/ready")
    assert (response.status_code, response.json) == (503, {"ready": False})
    assert app.test_client().get("/v2/health/live").status_code == 200


def test_non_finite_outputs_written_as_tokens(client):
    body = (b'{"inputs": [{"name": "x", "shape": [4, 1], "datatype": "FP32", '
            b'"data": [NaN, Infinity, -Infinity, 1.0]}]}')
    response = client.post("/v2/models/half_plus_two/infer", data=body)
    assert response.status_code == 200, response.get_data()
    assert b'"data": [NaN, Infinity, -Infinity, 2.5]' in response.get_data()
    infinite = client.post("/v2/models/half_plus_two/infer", data=body.replace(b"NaN", b"3.0"))
    assert b'"data": [3.5, Infinity, -Infinity, 2.5]' in infinite.get_data()
