"""gRPC: TF Serving's and KServe V2's services, called with their own clients, on a real server.

One server process for most of the file, started as ``tensorflow_model_server`` is (``--port``
the gRPC port, ``--rest_api_port`` the REST port), with two workers, a token, and small limits;
the test that stops a server has one of its own.
"""

import argparse
import os
import pathlib
import re
import shutil
import textwrap
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest import (
    PENGUIN_CLASSES,
    PENGUIN_ROWS,
    TESTDATA,
    ServerProcess,
    free_port,
    save_slow_model,
    wait_for,
)
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import cli
from serving.cli import add_serve_arguments, ports

TOKEN = "grpc-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
TIMEOUT = 10
MAX_REQUEST_MB = 2
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_BATCH_ROWS = 300_000
RELOAD_SECONDS = 30
USERS_GRPC_EXPERIMENTS = "-event_engine_listener"  # one of the user's own choosing


@pytest.fixture(scope="module")
def server(model_repo, model_config_file, tmp_path_factory):
    """The conftest models plus ``hot`` (half_plus_two as version 1), over REST and gRPC."""
    root = tmp_path_factory.mktemp("grpc")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu" / "00000123", root / "hot" / "1")
    config = root / "models.config"
    text = model_config_file.read_text().rstrip().removesuffix("}")
    config.write_text(text + "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}\n'
        for name in ("hot",)) + "}\n")
    (root / "token").write_text(TOKEN)
    grpc_port = free_port()
    process = ServerProcess(
        ["--model_config_file", str(config), "--port", str(grpc_port), "--workers", "2",
         "--auth_token_file", str(root / "token"), "--file_system_poll_wait_seconds", "0.2",
         "--max_request_mb", str(MAX_REQUEST_MB), "--max_batch_rows", str(MAX_BATCH_ROWS)],
        root / "server.log", port_flag="--rest_api_port",
    )
    # Nothing listens on the gRPC port while the workers load TensorFlow and the models.
    early = _health_code(grpc_port)
    try:
        process.wait_ready("/v1/models/half_plus_two")
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        assert wait_for(lambda: _listeners(grpc_port) == 2, 60), process.log()
        process.grpc_port, process.channel, process.early_code = grpc_port, channel, early
        process.root = root
        yield process
        channel.close()
    finally:
        process.stop()


def _health_code(port: int) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus
        try:
            status(get_model_status_pb2.GetModelStatusRequest(), timeout=1)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port, one per worker with SO_REUSEPORT (gRPC listens
    on an IPv6 socket, at the IPv4-mapped address)."""
    addresses = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as table:
            rows += [line.split() for line in list(table)[1:]]
    return sum(1 for r in rows if r[3] == "0A" and r[1] in addresses)


@pytest.fixture(scope="module")
def predictions(server):
    return prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


def _predict(name: str, inputs: dict, version: int | None = None, label: str = "",
             signature: str = "", output_filter=()) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def _example(**features) -> tf.train.Example:
    def feature(value):
        if isinstance(value, str):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(value)))

    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in features.items()}))


def _code(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, metadata=AUTH, timeout=TIMEOUT)
    return raised.value.code(), raised.value.details()


X = np.array([[1.0], [2.0], [5.0]], np.float32)


@pytest.mark.parametrize(("name", "expected"), [
    ("half_plus_two", [2.5, 3.0, 4.5]),
    ("half_plus_three", [3.5, 4.0, 5.5]),  # TF1 SavedModel
    ("half_plus_two_tf2", [2.5, 3.0, 4.5]),
])
def test_predict_reference_models(predictions, name, expected):
    response = predictions.Predict(_predict(name, {"x": X}), metadata=AUTH, timeout=TIMEOUT)
    assert list(response.outputs["y"].float_val) == expected  # typed values, as TF Serving's
    assert tf.make_ndarray(response.outputs["y"]).shape == (3, 1)
    assert response.model_spec.name == name
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(("version", "label", "answered"), [
    (None, "", 124), (123, "", 123), (124, "", 124), (None, "stable", 123), (None, "canary", 124),
])
def test_version_and_label_choose_the_version_that_answers(predictions, version, label, answered):
    request = _predict("two_versions", {"x": X}, version=version, label=label)
    response = predictions.Predict(request, metadata=AUTH, timeout=TIMEOUT)
    assert response.model_spec.version.value == answered
    assert tf.make_ndarray(response.outputs["y"]).ravel().tolist() == [2.5, 3.0, 4.5]


def test_output_filter_returns_only_the_outputs_asked_for(predictions):
    inputs = {k: v for k, v in PENGUIN_ROWS.items()}
    everything = predictions.Predict(_predict("penguins", inputs), metadata=AUTH, timeout=TIMEOUT)
    assert {"probabilities", "classes"} <= set(everything.outputs)
    only = predictions.Predict(_predict("penguins", inputs, output_filter=["classes"]),
                               metadata=AUTH, timeout=TIMEOUT)
    assert list(only.outputs) == ["classes"]
    assert only.outputs["classes"] == everything.outputs["classes"]


def test_exported_model_with_string_and_number_columns(predictions, table_classifier):
    response = predictions.Predict(_predict("penguins", dict(PENGUIN_ROWS)),
                                   metadata=AUTH, timeout=TIMEOUT)
    expected = table_classifier({k: v.reshape(-1, 1) for k, v in PENGUIN_ROWS.items()}).numpy()
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]), expected,
                               atol=1e-5, rtol=0)
    classes = tf.make_ndarray(response.outputs["classes"]).ravel().tolist()
    assert classes == [PENGUIN_CLASSES[i].encode() for i in expected.argmax(-1)]


@pytest.mark.parametrize(("request_", "code", "text"), [
    (_predict("no_such_model", {"x": X}), "NOT_FOUND", "no_such_model"),
    (_predict("half_plus_two", {"x": X}, version=9), "NOT_FOUND", "9"),
    (_predict("bad_half_plus_two", {"x": X}), "NOT_FOUND", "bad_half_plus_two"),
    (_predict("two_versions", {"x": X}, label="nightly"), "INVALID_ARGUMENT", "nightly"),
    (_predict("half_plus_two", {"z": X}), "INVALID_ARGUMENT", "input tensor alias not found"),
    (_predict("half_plus_two", {"x": X.astype(np.float64)}), "INVALID_ARGUMENT", "DT_DOUBLE"),
    (_predict("half_plus_two", {"x": X}, output_filter=["q"]), "INVALID_ARGUMENT", "q"),
    (_predict("half_plus_two", {"x": X}, signature="nope"), "INVALID_ARGUMENT", "nope"),
    (_predict("half_plus_two", {"x": np.zeros((MAX_BATCH_ROWS + 1, 1), np.float32)}),
     "INVALID_ARGUMENT", "max_batch_rows"),
], ids=["model", "version", "failed to load", "label", "input", "dtype", "output_filter",
        "signature", "rows"])
def test_errors_carry_tf_servings_status_codes(predictions, request_, code, text):
    got, details = _code(predictions.Predict, request_)
    assert got == getattr(grpc.StatusCode, code)
    assert text in details
    assert "/tmp" not in details  # server paths never reach a client


def test_a_message_over_the_size_limit_is_refused(predictions):
    rows = MAX_REQUEST_MB * 1024 * 1024 // 4 + 1024
    request = _predict("half_plus_two", {"x": np.zeros((rows, 1), np.float32)})
    assert _code(predictions.Predict, request)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_token_is_required_but_not_for_model_status(server, predictions):
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(_predict("half_plus_two", {"x": X}), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer not-the-token"),)
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(_predict("half_plus_two", {"x": X}), metadata=wrong, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status = model_service_pb2_grpc.ModelServiceStub(server.channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "half_plus_two"}),
        timeout=TIMEOUT)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_model_status_names_versions_and_failures(server):
    stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
    status = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "two_versions"}), timeout=TIMEOUT)
    assert [s.version for s in status.model_version_status] == [124, 123]
    labelled = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "two_versions", "version_label": "stable"}), timeout=TIMEOUT)
    assert [s.version for s in labelled.model_version_status] == [123]
    bad = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "bad_half_plus_two"}), timeout=TIMEOUT)
    (failed,) = bad.model_version_status
    assert failed.state == get_model_status_pb2.ModelVersionStatus.END
    assert failed.status.error_code != 0 and failed.status.error_message
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "nope"}), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.early_code == grpc.StatusCode.UNAVAILABLE  # while the workers loaded


def test_classify_and_regress_reference_model(predictions):
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.append(_example(x=2.0))
    response = predictions.Classify(classify, metadata=AUTH, timeout=TIMEOUT)
    assert [(c.label, c.score) for c in response.result.classifications[0].classes] == [("", 3.0)]
    assert response.model_spec.signature_name == "classify_x_to_y"

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"
    regress.model_spec.signature_name = "regress_x_to_y2"
    regress.input.example_list_with_context.context.CopyFrom(_example(x=4.0))
    regress.input.example_list_with_context.examples.extend([_example(), _example(x=2.0)])
    response = predictions.Regress(regress, metadata=AUTH, timeout=TIMEOUT)
    # regress_x_to_y2 is x/2 + 3; an example's own x wins over the context's.
    assert [r.value for r in response.result.regressions] == [5.0, 4.0]
    assert response.model_spec.version.value == 123

    regress.input.example_list_with_context.ClearField("examples")
    assert _code(predictions.Regress, regress) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                    "Input is empty.")


def test_exported_classifier_and_regressor_take_examples(predictions, table_classifier, regressor):
    row = {"island": "Dream", "bill_length_mm": 48.7, "body_mass_g": 3500.0}
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "penguins"
    classify.model_spec.signature_name = "classify"
    classify.input.example_list.examples.append(_example(**row))
    (result,) = predictions.Classify(classify, metadata=AUTH,
                                     timeout=TIMEOUT).result.classifications
    expected = table_classifier({k: np.array([[v]]) for k, v in row.items()}).numpy()[0]
    assert [c.label for c in result.classes] == PENGUIN_CLASSES
    np.testing.assert_allclose([c.score for c in result.classes], expected, atol=1e-5, rtol=0)

    rows = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]], np.float32)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "mpg"
    regress.model_spec.signature_name = "regress"
    regress.input.example_list.examples.extend(_example(x=r) for r in rows)
    response = predictions.Regress(regress, metadata=AUTH, timeout=TIMEOUT)
    np.testing.assert_allclose([r.value for r in response.result.regressions],
                               regressor(rows).numpy().ravel(), atol=1e-5, rtol=0)


def test_multi_inference_runs_each_task_on_the_same_examples(predictions):
    request = inference_pb2.MultiInferenceRequest()
    request.input.example_list.examples.extend([_example(x=2.0), _example(x=4.0)])
    for signature, method in (("classify_x_to_y", "classify"), ("regress_x_to_y2", "regress")):
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", signature
    response = predictions.MultiInference(request, metadata=AUTH, timeout=TIMEOUT)
    classified, regressed = response.results
    assert [c.classes[0].score for c in classified.classification_result.classifications] == [
        3.0, 4.0]
    assert [r.value for r in regressed.regression_result.regressions] == [4.0, 5.0]
    assert regressed.model_spec.signature_name == "regress_x_to_y2"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    code, details = _code(predictions.MultiInference, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Duplicate" in details


def test_model_metadata_is_the_signature_defs(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "two_versions"
    request.model_spec.version.value = 123
    response = predictions.GetModelMetadata(request, metadata=AUTH, timeout=TIMEOUT)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(
        signatures.signature_def)
    assert signatures.signature_def["serving_default"].inputs["x"].dtype == tf.float32
    assert (response.model_spec.name, response.model_spec.version.value) == ("two_versions", 123)
    request.metadata_field[:] = ["not_a_field"]
    assert _code(predictions.GetModelMetadata, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_calls_are_counted_in_the_shared_metrics(server, predictions):
    for _ in range(3):
        predictions.Predict(_predict("half_plus_two_tf2", {"x": X}), metadata=AUTH,
                            timeout=TIMEOUT)
    line = ':tensorflow:serving:request_count{model_name="half_plus_two_tf2",status="OK"} '

    def counted() -> bool:  # other workers' numbers arrive within about a second
        text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=TIMEOUT,
                            headers={"Authorization": f"Bearer {TOKEN}"}).text
        grpc_latency = 'model_name="half_plus_two_tf2",API="predict",entrypoint="GRPC"'
        lines = text.splitlines()
        return grpc_latency in text and any(
            x.startswith(line) and float(x[len(line):]) >= 3 for x in lines)

    assert wait_for(counted, 10)


def test_server_reflection_lists_the_services(server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    database = ProtoReflectionDescriptorDatabase(server.channel)
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "inference.GRPCInferenceService"} <= set(database.get_services())
    # What grpcurl does: every message of a method, with the files they import.
    service = DescriptorPool(database).FindServiceByName("tensorflow.serving.PredictionService")
    predict = service.methods_by_name["Predict"]
    tensor = predict.input_type.fields_by_name["inputs"].message_type.fields_by_name["value"]
    assert tensor.message_type.full_name == "tensorflow.TensorProto"


# --- KServe V2 over gRPC, with Triton's client ------------------------------------------------


@pytest.fixture(scope="module")
def triton(server):
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="pip install tritonclient")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield grpcclient, client
    client.close()


HEADERS = {"authorization": f"Bearer {TOKEN}"}


def test_v2_health_and_metadata(triton):
    _, client = triton
    assert client.is_server_live()
    assert not client.is_server_ready()  # as /v2/health/ready: bad_half_plus_two never loads
    assert client.is_model_ready("half_plus_two", headers=HEADERS)
    metadata = client.get_server_metadata(headers=HEADERS)
    assert metadata.name == "tfkit" and "binary_tensor_data" in metadata.extensions
    model = client.get_model_metadata("penguins", headers=HEADERS)
    assert {(t.name, t.datatype) for t in model.inputs} == {
        ("island", "BYTES"), ("bill_length_mm", "FP32"), ("body_mass_g", "FP32")}


def test_v2_infer_with_raw_contents(triton, table_classifier):
    grpcclient, client = triton
    inputs = []
    for name, values in PENGUIN_ROWS.items():
        tensor = grpcclient.InferInput(name, [4], "BYTES" if values.dtype == object else "FP32")
        tensor.set_data_from_numpy(
            np.array([v.encode() for v in values], object) if values.dtype == object else values)
        inputs.append(tensor)
    result = client.infer("penguins", inputs, headers=HEADERS, request_id="r1",
                          outputs=[grpcclient.InferRequestedOutput("probabilities"),
                                   grpcclient.InferRequestedOutput("classes")])
    expected = table_classifier({k: v.reshape(-1, 1) for k, v in PENGUIN_ROWS.items()}).numpy()
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5, rtol=0)
    assert result.as_numpy("classes").ravel().tolist() == [
        PENGUIN_CLASSES[i].encode() for i in expected.argmax(-1)]
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("penguins", "1", "r1")
    assert len(response.raw_output_contents) == 2


def test_v2_infer_with_typed_contents_answers_in_typed_contents(server, triton):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="half_plus_two")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[3, 1])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 5.0])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    response = stub.ModelInfer(request, metadata=AUTH, timeout=TIMEOUT)
    assert list(response.outputs[0].contents.fp32_contents) == [2.5, 3.0, 4.5]
    assert list(response.outputs[0].shape) == [3, 1] and not response.raw_output_contents
    tensor.datatype = "INT32"
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request, metadata=AUTH, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP32" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(service_pb2.ModelInferRequest(model_name="nope"), metadata=AUTH,
                        timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_v2_infer_a_megabyte_tensor(triton):
    grpcclient, client = triton
    values = np.random.default_rng(0).normal(size=(262_144, 1)).astype(np.float32)  # 1 MiB
    tensor = grpcclient.InferInput("x", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    result = client.infer("half_plus_two", [tensor], headers=HEADERS)
    np.testing.assert_allclose(result.as_numpy("y"), values / 2 + 2, rtol=1e-6)


def test_v2_grpc_calls_are_counted_as_grpc(server, triton):
    grpcclient, client = triton
    tensor = grpcclient.InferInput("x", [2, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[1.0], [2.0]], np.float32))
    for _ in range(2):
        client.infer("half_plus_three", [tensor], headers=HEADERS)
    label = 'model_name="half_plus_three",API="infer",entrypoint="GRPC"'

    def counted() -> bool:
        text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=TIMEOUT,
                            headers={"Authorization": f"Bearer {TOKEN}"}).text
        counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if "request_latency_count{" in line and label in line]
        return bool(counts) and sum(counts) >= 2

    assert wait_for(counted, 10)


# --- hot reload and the flags -------------------------------------------------------------------


def test_hot_reload_fails_no_grpc_call(server, predictions):
    """Version 2 of ``hot`` (half_plus_three: x/2 + 3) replaces version 1 (x/2 + 2) under
    traffic from four clients; every call is answered, by one version or the other."""
    stop = threading.Event()
    results: list[list] = [[] for _ in range(4)]
    request = _predict("hot", {"x": np.array([[2.0]], np.float32)})

    def client(mine: list) -> None:
        while not stop.is_set():
            try:
                response = predictions.Predict(request, metadata=AUTH, timeout=TIMEOUT)
                mine.append(tf.make_ndarray(response.outputs["y"]).item())
            except grpc.RpcError as exc:
                mine.append(exc.code())

    threads = [threading.Thread(target=client, args=(mine,), daemon=True) for mine in results]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: all(3.0 in mine for mine in results), RELOAD_SECONDS)
        staged = server.root / "hot" / ".staged"
        shutil.copytree(TESTDATA / "saved_model_half_plus_three" / "00000123", staged)
        staged.rename(server.root / "hot" / "2")
        assert wait_for(lambda: all(mine[-3:] == [4.0] * 3 for mine in results), RELOAD_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert sum(map(len, results)) > 20
    assert {value for mine in results for value in mine} == {3.0, 4.0}


@pytest.mark.parametrize(("flags", "expected"), [
    (["--port", "8500", "--rest_api_port", "8501"], (8501, 8500)),
    (["--rest_api_port", "9001"], (9001, 8500)),  # TF Serving's default gRPC port
    (["--rest_api_port", "9001", "--grpc-port", "9000", "--port", "7"], (9001, 9000)),
    (["--rest_api_port", "9001", "--port", "0"], (9001, None)),
    (["--port", "9001"], (9001, None)),
    (["--port", "9001", "--grpc-port", "9000"], (9001, 9000)),
    (["--model_base_path", "m", "--port", "9001"], (9001, None)),
    ([], (8501, None)),
])
def test_which_flag_names_which_port(flags, expected):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert ports(parser.parse_args(flags)) == expected


def test_one_port_for_rest_and_grpc_stops_at_once():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    with pytest.raises(SystemExit, match="cannot share port 8501"):
        ports(parser.parse_args(["--port", "8501", "--rest_api_port", "8501"]))


@pytest.fixture(scope="module")
def stopping_server(tmp_path_factory):
    """Two workers serving ``slow`` over gRPC, for the test that stops them; the file each
    call writes a line to when it starts is ``.started``."""
    root = tmp_path_factory.mktemp("grpc-stop")
    started = root / "started.txt"
    save_slow_model(root / "models" / "slow" / "1", started)
    grpc_port = free_port()
    process = ServerProcess(["--models", str(root / "models"), "--port", str(grpc_port),
                             "--workers", "2"], root / "server.log", port_flag="--rest_api_port",
                            env={"GRPC_EXPERIMENTS": USERS_GRPC_EXPERIMENTS})
    try:
        process.wait_ready("/v1/models/slow")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        assert wait_for(lambda: _listeners(grpc_port) == 2, 60), process.log()
        process.grpc_port, process.started = grpc_port, started
        yield process
    finally:
        process.stop()


def test_workers_set_grpc_core_experiments_unless_the_user_did(server, stopping_server):
    """`tfkit serve` turns gRPC core's EventEngine experiments off in its workers (why:
    serving/cli.py); a GRPC_EXPERIMENTS the user set is kept. Each worker says which."""
    ours = os.environ.get("GRPC_EXPERIMENTS", cli.GRPC_EXPERIMENTS)  # this run's own, if set
    assert server.log_path.read_text().count(f"(GRPC_EXPERIMENTS={ours})\n") == 2
    kept = f"(GRPC_EXPERIMENTS={USERS_GRPC_EXPERIMENTS})\n"
    assert stopping_server.log_path.read_text().count(kept) == 2


def test_sigterm_lets_the_calls_in_flight_finish(stopping_server):
    server = stopping_server
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(milliseconds: float) -> float:
        request = _predict("slow", {"x": np.array([milliseconds], np.float32)})
        start = time.monotonic()
        predictions.Predict(request, timeout=60)
        return time.monotonic() - start

    def calls_started() -> int:
        return len(server.started.read_text().splitlines()) if server.started.exists() else 0

    before = calls_started()
    answers: list = []

    def caller() -> None:
        try:
            answers.append(call(1500.0))  # 1.5 s a call
        except grpc.RpcError as exc:
            answers.append(exc.code())

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for thread in threads:
        thread.start()
    # Both calls are running in the model when the server is told to stop.
    assert wait_for(lambda: calls_started() == before + 2, 30), server.log()
    assert server.stop(timeout=30) == 0
    for thread in threads:
        thread.join(timeout=30)
    channel.close()
    assert len(answers) == 2 and all(isinstance(a, float) for a in answers), answers
    assert "Shutting down" in server.log()


def test_readme_python_snippet_predicts_over_grpc(server, capsys):
    """The README's `tensorflow-serving-api` snippet, as written, against this server: its
    port, the token, and a row of the test penguins model (three of the quickstart's columns)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    snippet = textwrap.dedent(
        readme.split("- **gRPC**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0])
    row = {name: values[1].item() if hasattr(values[1], "item") else values[1]
           for name, values in PENGUIN_ROWS.items()}
    lines = [f"  penguin = {row!r}" if line.startswith("penguin = {") else line
             for line in snippet.split("\n")]
    snippet = "\n".join(line for line in lines
                        if not line.startswith("           ")).replace("  penguin", "penguin")
    snippet = snippet.replace("127.0.0.1:8500", f"127.0.0.1:{server.grpc_port}").replace(
        "timeout=10)", f"timeout=10, metadata={AUTH!r})")
    exec(compile(snippet, "README.md", "exec"), {})  # noqa: S102 - the README's own code
    printed = capsys.readouterr().out
    probabilities = [float(p) for p in re.findall(r"[\d.]+(?:e-?\d+)?", printed.split("]]")[0])]
    assert len(probabilities) == len(PENGUIN_CLASSES), printed
    assert abs(sum(probabilities) - 1) < 1e-4 and printed.split("]]")[1].split() == ["1"], printed
