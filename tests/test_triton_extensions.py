"""Triton's HTTP extensions (model configuration, repository, statistics): tritonclient and raw
HTTP against a real server, answered as Triton answers them."""

import shutil

import numpy as np
import pytest
import requests
from conftest import REFERENCE_MODELS, TESTDATA

tritonclient_http = pytest.importorskip(
    "tritonclient.http", reason="tritonclient is not installed (pip install 'tritonclient[http]')"
)
from tritonclient.utils import InferenceServerException  # noqa: E402

TIMEOUT = 10
HALF_CONFIG = {
    "name": "half_plus_two", "platform": "tensorflow_savedmodel", "backend": "tensorflow",
    "max_batch_size": 0,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [-1, 1]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [-1, 1], "label_filename": ""}],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    """half_plus_two; two_versions, serving its latest (124); broken, which never loads."""
    repo = tmp_path_factory.mktemp("triton-models")
    for name, folder in (("half_plus_two", "half_plus_two"), ("two_versions", "two_versions"),
                         ("broken", "bad_half_plus_two")):
        shutil.copytree(TESTDATA / REFERENCE_MODELS[folder], repo / name)
    # One worker: the statistics are each worker's own.
    return start_server(["--models", str(repo), "--workers", "1",
                         "--file_system_poll_wait_seconds", "0"], "/v1/models/half_plus_two")


@pytest.fixture(scope="module")
def triton(server):
    client = tritonclient_http.InferenceServerClient(
        server.url.removeprefix("http://"), connection_timeout=TIMEOUT, network_timeout=TIMEOUT
    )
    yield client
    client.close()


def _error(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value.status(), caught.value.message()


def test_server_metadata_lists_the_extensions(triton):
    assert triton.get_server_metadata()["extensions"] == [
        "binary_tensor_data", "model_configuration", "model_repository", "statistics"]


def test_model_configuration(triton):
    assert triton.get_model_config("half_plus_two") == HALF_CONFIG
    assert triton.get_model_config("half_plus_two", "123") == HALF_CONFIG
    assert triton.get_model_config("two_versions")["name"] == "two_versions"
    assert _error(triton.get_model_config, "nope") == (
        "400", "Request for unknown model: 'nope' is not found")
    assert _error(triton.get_model_config, "half_plus_two", "7") == (
        "404", "Request for unknown model: 'half_plus_two' version 7 is not found")
    assert _error(triton.get_model_config, "broken") == (
        "404", "Request for unknown model: 'broken' has no available versions")
    assert _error(triton.get_model_config, "broken", "123") == (
        "503", "Request for unknown model: 'broken' version 123 is not at ready state")


def test_repository_index(triton, server):
    index = triton.get_model_repository_index()
    (broken,) = [entry for entry in index if entry["name"] == "broken"]
    assert broken.pop("reason").startswith("SavedModel file does not exist")
    assert index == [
        {"name": "broken", "version": "123", "state": "UNAVAILABLE"},
        {"name": "half_plus_two", "version": "123", "state": "READY"},
        {"name": "two_versions", "version": "124", "state": "READY"},
    ]
    url = f"{server.url}/v2/repository/index"
    ready = requests.post(url, json={"ready": True}, timeout=TIMEOUT)
    assert ready.headers["Content-Type"] == "application/json"
    assert ready.json() == [{"name": "half_plus_two", "version": "123", "state": "READY"},
                            {"name": "two_versions", "version": "124", "state": "READY"}]
    assert len(requests.post(url, json={"ready": False}, timeout=TIMEOUT).json()) == 3
    wrong = requests.post(url, json={"ready": "yes"}, timeout=TIMEOUT)
    assert (wrong.status_code, wrong.json()) == (
        400, {"error": "Invalid value for 'ready': expected a boolean"})


def test_load_and_unload_are_refused_as_triton_refuses_them_when_polling(triton):
    message = "explicit model load / unload is not allowed if polling is enabled"
    assert _error(triton.load_model, "half_plus_two") == ("409", message)
    assert _error(triton.unload_model, "half_plus_two") == ("409", message)
    assert triton.is_model_ready("half_plus_two")


def _stats(triton, *args) -> dict:
    (stats,) = triton.get_inference_statistics(*args)["model_stats"]
    return stats


def _infer(triton, rows: int, datatype: str = "FP32"):
    tensor = tritonclient_http.InferInput("x", [rows, 1], datatype)
    tensor.set_data_from_numpy(np.arange(rows, dtype=np.float32 if datatype == "FP32"
                                         else np.float64).reshape(rows, 1))
    return triton.infer("two_versions", [tensor])


def test_statistics_count_the_requests_served(triton, server):
    before = _stats(triton, "two_versions")
    assert (before["name"], before["version"]) == ("two_versions", "124")
    for _ in range(5):  # one at a time: each runs alone
        np.testing.assert_array_equal(_infer(triton, 3).as_numpy("y"), [[2.0], [2.5], [3.0]])
    with pytest.raises(InferenceServerException, match="unexpected datatype FP64"):
        _infer(triton, 1, "FP64")
    predict = requests.post(f"{server.url}/v1/models/two_versions:predict",
                            json={"instances": [1.0, 2.0]}, timeout=TIMEOUT)
    assert predict.json() == {"predictions": [2.5, 3.0]}

    after = _stats(triton, "two_versions", "124")
    assert after["inference_count"] - before["inference_count"] == 5 * 3 + 2
    assert after["execution_count"] - before["execution_count"] == 6
    phases = {name: (after["inference_stats"][name]["count"]
                     - before["inference_stats"][name]["count"],
                     after["inference_stats"][name]["ns"] - before["inference_stats"][name]["ns"])
              for name in ("success", "fail", "queue", "compute_input", "compute_infer",
                           "compute_output")}
    assert {name: count for name, (count, _) in phases.items()} == {
        "success": 6, "fail": 1, "queue": 6, "compute_input": 6, "compute_infer": 6,
        "compute_output": 6}
    assert all(ns > 0 for name, (_, ns) in phases.items() if name != "queue")
    successes = phases["success"][1]
    assert successes >= sum(phases[p][1] for p in ("compute_input", "compute_infer",
                                                   "compute_output"))
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    old_sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    assert sizes[3] - old_sizes.get(3, 0) == 5 and sizes[2] - old_sizes.get(2, 0) == 1
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    assert after["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}


def test_statistics_of_every_served_version_and_triton_errors(triton):
    listed = triton.get_inference_statistics()["model_stats"]
    assert [(s["name"], s["version"]) for s in listed] == [
        ("half_plus_two", "123"), ("two_versions", "124")]
    assert _error(triton.get_inference_statistics, "nope") == (
        "400", "requested model 'nope' is not available")
    assert _error(triton.get_inference_statistics, "broken") == (
        "400", "requested model 'broken' is not available")
    assert _error(triton.get_inference_statistics, "two_versions", "123") == (
        "400", "requested model version is not available for model 'two_versions'")
