"""The serve command as a real process: HTTP over 127.0.0.1, hot reload under traffic, SIGTERM."""

import pathlib
import socket
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import requests
from conftest import (
    PENGUIN_ROWS,
    REFERENCE_MODELS,
    TESTDATA,
    copy_reference_models,
    free_port,
    put_version,
    wait_for,
)

from tfkit.export import export_model

RELOAD_SECONDS = 20
CLIENTS = 4


def _linear(kernel: float, bias: float) -> keras.Model:
    inputs = keras.Input(shape=(1,), name="x")
    layer = keras.layers.Dense(1)
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([np.array([[kernel]], np.float32), np.array([bias], np.float32)])
    return model


@pytest.fixture(scope="module")
def repository(tmp_path_factory, table_classifier):
    repo = tmp_path_factory.mktemp("served")
    copy_reference_models(repo)
    export_model(table_classifier, repo / "penguins", task="multiclass")
    return repo


@pytest.fixture(scope="module")
def server(repository, start_server):
    return start_server(
        # One worker: with several, each polls on its own and may swap versions a poll later.
        ["--models", str(repository), "--file_system_poll_wait_seconds", "0.3", "--workers", "1"],
        "/v1/models/half_plus_two",
    )


def _versions(server, name):
    response = requests.get(f"{server.url}/v1/models/{name}", timeout=5)
    return {s["version"]: s for s in response.json().get("model_version_status", [])}


def test_reference_models_over_http(server):
    for name in REFERENCE_MODELS:  # one server, several models: a loop over one fixture
        status = requests.get(f"{server.url}/v1/models/{name}", timeout=5)
        assert status.status_code == 200
        assert status.headers["Content-Type"] == "application/json"
    response = requests.post(f"{server.url}/v1/models/half_plus_three:predict",
                             json={"instances": [1.0, 2.0, 5.0]}, timeout=5)
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}
    bad = requests.post(f"{server.url}/v1/models/bad_half_plus_two:predict",
                        json={"instances": [1.0]}, timeout=5)
    assert bad.status_code == 404
    assert _versions(server, "bad_half_plus_two")["123"]["state"] == "END"


def test_exported_model_over_http(server, table_classifier):
    rows = [{name: values[i].item() if values.dtype != object else values[i]
             for name, values in PENGUIN_ROWS.items()} for i in range(4)]
    response = requests.post(f"{server.url}/v1/models/penguins:predict",
                             json={"instances": rows}, timeout=5)
    assert response.status_code == 200, response.text
    expected = table_classifier({k: v.reshape(-1, 1) for k, v in PENGUIN_ROWS.items()}).numpy()
    got = [p["probabilities"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_a_worker_serves_keras_exports_without_keras_matplotlib_or_pandas_loaded(server):
    """`import tensorflow` ends by importing all of Keras, and with it matplotlib and pandas;
    a worker starts TensorFlow without them (serving/_compat.py) and still serves a Keras
    export. Their compiled libraries would be mapped into the worker's memory; Keras itself
    is pure Python, but it loads optree's (TensorFlow does not use optree)."""
    children = pathlib.Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    if not children.exists():
        pytest.skip("no /proc on this system to read a worker's loaded libraries from")
    row = {name: values[0] if values.dtype == object else values[0].item()
           for name, values in PENGUIN_ROWS.items()}
    response = requests.post(f"{server.url}/v1/models/penguins:predict",
                             json={"instances": [row]}, timeout=5)
    assert response.status_code == 200, response.text
    (worker,) = [int(pid) for pid in children.read_text().split()]  # --workers 1
    loaded = pathlib.Path(f"/proc/{worker}/maps").read_text()
    assert "libtensorflow" in loaded  # the worker, with TensorFlow started
    assert [package for package in ("optree", "matplotlib", "pandas")
            if f"/{package}/" in loaded] == []


def test_hot_reload_under_traffic(server, repository):
    base = repository / "hot"
    export_model(_linear(0.5, 2.0), base, version=1)  # y = 0.5x + 2
    deadline = time.monotonic() + RELOAD_SECONDS
    while "1" not in _versions(server, "hot") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "1" in _versions(server, "hot")

    stop = threading.Event()
    # Per client, in the order its answers came: (status, value). Each client asks again
    # only once answered, so its own sequence has an order; several clients' do not.
    results: list[list[tuple[int, float | None]]] = [[] for _ in range(CLIENTS)]

    def client(mine: list) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    r = session.post(f"{server.url}/v1/models/hot:predict",
                                     json={"instances": [[2.0]]}, timeout=10)
                    value = r.json()["predictions"][0] if r.status_code == 200 else None
                    mine.append((r.status_code, value))
                except (requests.RequestException, ValueError, KeyError):
                    mine.append((0, None))

    def each_client_answered(value: float) -> bool:
        return all(any(v == value for _, v in mine[-3:]) for mine in results)

    threads = [threading.Thread(target=client, args=(mine,), daemon=True) for mine in results]
    for thread in threads:
        thread.start()
    try:
        assert _wait_for(lambda: each_client_answered(3.0))
        export_model(_linear(3.0, 1.0), base)  # version 2: y = 3x + 1, written atomically
        assert _wait_for(lambda: list(_versions(server, "hot")) == ["2"])
        assert _wait_for(lambda: each_client_answered(7.0))

        # A broken version 3 appears (renamed in, like an export) and must never be served.
        put_version(TESTDATA / "bad_half_plus_two" / "00000123", base / "3")
        assert _wait_for(lambda: _versions(server, "hot").get("3", {}).get("state") == "END")
        answered = [len(mine) for mine in results]  # and each client is answered after it
        assert _wait_for(lambda: all(
            len(mine) > n + 2 for mine, n in zip(results, answered, strict=True)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)

    states = _versions(server, "hot")
    assert states["3"]["state"] == "END"
    assert states["3"]["status"]["error_code"] != "OK"
    assert states["2"]["state"] == "AVAILABLE"
    for mine in results:
        assert [r for r in mine if r[0] != 200] == []
        values = [v for _, v in mine]
        # Version 1 (3.0) until version 2 (7.0) answered this client, then only version 2.
        switch = values.index(7.0)
        assert switch > 0 and set(values[:switch]) == {3.0}, values
        assert set(values[switch:]) == {7.0}, values


def _wait_for(condition, seconds: float = RELOAD_SECONDS) -> bool:
    return wait_for(condition, seconds)


def test_tf_serving_flags_and_sigterm(start_server):
    server = start_server(
        ["--model_name", "half", "--model_base_path",
         str(TESTDATA / "saved_model_half_plus_two_cpu"), "--port", str(free_port())],
        "/v1/models/half",
        port_flag="--rest_api_port",  # wins over --port, TF Serving's gRPC port
    )
    response = requests.post(f"{server.url}/v1/models/half:predict",
                             json={"instances": [2.0, 3.0, 4.0]}, timeout=5)
    assert response.json() == {"predictions": [3.0, 3.5, 4.0]}
    assert server.stop(timeout=30) == 0  # exit 0 on SIGTERM; a kill after the timeout is -9
    assert "Shutting down" in server.log()


def test_several_workers_stop_at_once_when_the_port_is_taken(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "serving", "--models", str(tmp_path), "--workers", "2",
             "--port", str(port)],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
