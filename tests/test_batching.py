"""Dynamic batching: merging, splitting, queue bounds, failures, parameters, the app under load."""

import concurrent.futures
import threading
import time

import numpy as np
import pytest
import requests as http

from serving.batching import (
    Batcher,
    BatchingParameters,
    Unavailable,
    parameters_from_config,
)

WAIT = 10  # seconds; a bound for anything that should take milliseconds


class Owner:
    """Stands in for a loaded model version (queues are kept per owner)."""


class GatedModel:
    """Doubles its input; the first call blocks until released, so others queue behind it."""

    def __init__(self, fail_negative: bool = False, wrong_rows: bool = False) -> None:
        self.calls: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self._fail_negative = fail_negative
        self._wrong_rows = wrong_rows

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        self.calls.append(len(x))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(WAIT)
        if self._fail_negative and (x < 0).any():
            from serving.errors import InvalidArgument

            raise InvalidArgument("negative input")
        if self._wrong_rows and len(x) > 1:
            return [x.sum(axis=0, keepdims=True)]  # one row for the whole batch: unsplittable
        return [x * 2]


def _run(batcher, owner, arrays, model):
    """A request's model call as the inference core makes it: its queue, then a queued run."""
    return batcher.run_queued(batcher.queue(owner, "m", ("sig",)), arrays, model)


def _rows(value: float, rows: int = 1, width: int = 3) -> np.ndarray:
    return np.full((rows, width), value, dtype=np.float32) + np.arange(rows)[:, None]


def _run_behind_first(batcher, model, requests, owner=None):
    """Starts one request that holds the model, queues ``requests`` behind it, then releases."""
    owner = owner or Owner()
    with concurrent.futures.ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(_run, batcher, owner, {"x": _rows(100)}, model)
        assert model.started.wait(WAIT)
        futures = [pool.submit(_run, batcher, owner, {"x": x}, model)
                   for x in requests]
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:  # until each is queued or refused
            if _queued(batcher, owner) + sum(f.done() for f in futures) >= len(requests):
                break
            time.sleep(0.005)
        model.release.set()
        np.testing.assert_array_equal(first.result(WAIT)[0], _rows(100) * 2)
        return [f.result(WAIT) if f.exception(WAIT) is None else f.exception() for f in futures]


def _queued(batcher, owner) -> int:
    queue = batcher._queues.get(owner, {}).get(("sig",))
    return 0 if queue is None else len(queue._pending)  # batching off: no queue at all


def test_lone_request_runs_at_once_even_with_a_timeout():
    # A timeout far beyond the wait below: a lone request that waited for it would fail.
    batcher = Batcher(BatchingParameters(batch_timeout_micros=600_000_000))
    out = []
    # A daemon thread: if it did wait, the test fails after WAIT and leaves it behind.
    lone = threading.Thread(daemon=True, target=lambda: out.append(
        _run(batcher, Owner(), {"x": _rows(1)}, lambda f: [f["x"] * 2])))
    lone.start()
    lone.join(WAIT)
    assert out, f"a lone request still waits after {WAIT} s"
    np.testing.assert_array_equal(out[0][0], _rows(1) * 2)


def test_queued_requests_merge_into_one_run_and_split_back():
    batcher = Batcher(BatchingParameters(num_batch_threads=1))
    model = GatedModel()
    requests = [_rows(i * 10, rows=1 + i % 3) for i in range(8)]
    results = _run_behind_first(batcher, model, requests)
    assert model.calls == [1, sum(len(x) for x in requests)]  # everything queued ran as one
    for x, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out[0], x * 2)
    merged = sum(len(x) for x in requests)
    assert f'input_batch_size_sum{{model_name="m"}} {merged + 1}' in batcher.metrics.render()


def test_shapes_that_cannot_merge_run_in_separate_batches():
    batcher = Batcher(BatchingParameters(num_batch_threads=1))
    model = GatedModel()
    requests = [_rows(1, width=3), _rows(2, width=4), _rows(3, width=3)]
    results = _run_behind_first(batcher, model, requests)
    assert sorted(model.calls[1:]) == [1, 2]  # widths 3 merged, width 4 alone
    for x, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out[0], x * 2)


def test_max_batch_size_caps_a_merged_run():
    batcher = Batcher(BatchingParameters(num_batch_threads=1, max_batch_size=4))
    model = GatedModel()
    requests = [_rows(i, rows=2) for i in range(4)]
    _run_behind_first(batcher, model, requests)
    assert model.calls[1:] == [4, 4]


def test_full_queue_is_refused_with_503():
    params = BatchingParameters(num_batch_threads=1, max_batch_size=2, max_enqueued_batches=1)
    results = _run_behind_first(Batcher(params), GatedModel(), [_rows(1), _rows(2), _rows(3)])
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], Unavailable)
    assert refused[0].http_status == 503
    assert "queue" in refused[0].message


def test_a_failing_request_fails_alone():
    batcher = Batcher(BatchingParameters(num_batch_threads=1))
    model = GatedModel(fail_negative=True)
    requests = [_rows(1), _rows(-5), _rows(3)]
    results = _run_behind_first(batcher, model, requests)
    assert isinstance(results[1], Exception) and results[1].message == "negative input"
    np.testing.assert_array_equal(results[0][0], _rows(1) * 2)
    np.testing.assert_array_equal(results[2][0], _rows(3) * 2)


def test_outputs_without_a_batch_dimension_are_rerun_alone():
    batcher = Batcher(BatchingParameters(num_batch_threads=1))
    model = GatedModel(wrong_rows=True)
    requests = [_rows(1), _rows(2)]
    results = _run_behind_first(batcher, model, requests)
    assert model.calls[1:] == [2, 1, 1]
    for x, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out[0], x * 2)


def test_batches_are_padded_to_an_allowed_size():
    params = BatchingParameters(num_batch_threads=1, max_batch_size=8, allowed_batch_sizes=(4, 8))
    batcher = Batcher(params)
    model = GatedModel()
    requests = [_rows(1), _rows(2), _rows(3)]
    results = _run_behind_first(batcher, model, requests)
    assert model.calls[1:] == [4]
    for x, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out[0], x * 2)
    assert 'padding_size_sum{model_name="m"} 1' in batcher.metrics.render()


@pytest.mark.parametrize(("enabled", "later_calls"), [(True, [8]), (False, [1] * 8)])
def test_disabled_batching_never_merges(enabled, later_calls):
    """Eight requests for one model version arrive while it runs: enabled, they wait and
    run as one batch; disabled, each runs alone, without waiting for the one running."""
    batcher = Batcher(BatchingParameters(enabled=enabled, num_batch_threads=1))
    model = GatedModel()
    requests = [_rows(i) for i in range(8)]
    results = _run_behind_first(batcher, model, requests)
    assert model.calls == [1, *later_calls]
    for x, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out[0], x * 2)


def test_timeout_waits_for_requests_still_being_parsed():
    batcher = Batcher(BatchingParameters(num_batch_threads=1, batch_timeout_micros=3_000_000))
    owner, calls = Owner(), []

    def model(feeds):
        calls.append(len(feeds["x"]))
        return [feeds["x"] * 2]

    parsing = threading.Event()

    def slow_parser():
        with batcher.arrival():
            parsing.set()
            time.sleep(0.2)  # still parsing when the other request reaches the model
            return _run(batcher, owner, {"x": _rows(2)}, model)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        late = pool.submit(slow_parser)
        assert parsing.wait(WAIT)
        with batcher.arrival():
            early = _run(batcher, owner, {"x": _rows(1)}, model)
        np.testing.assert_array_equal(early[0], _rows(1) * 2)
        np.testing.assert_array_equal(late.result(WAIT)[0], _rows(2) * 2)
    assert calls == [2]


def test_parameters_file_in_tf_serving_format(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(
        "max_batch_size { value: 64 }\n"
        "batch_timeout_micros { value: 500 }\n"
        "max_enqueued_batches { value: 100 }\n"
        "num_batch_threads { value: 2 }\n"
        'thread_pool_name { value: "batch_threads" }\n'
        "allowed_batch_sizes: 32\nallowed_batch_sizes: 64\n"
        "pad_variable_length_inputs: true\n"
    )
    params = parameters_from_config({"BATCHING_PARAMETERS_FILE": str(path), "NUM_BATCH_THREADS": 3})
    assert params == BatchingParameters(
        max_batch_size=64, batch_timeout_micros=500, max_enqueued_batches=100,
        num_batch_threads=3, allowed_batch_sizes=(32, 64),
    )


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 4", "allowed_batch_sizes"),
    ("batch_size { value: 8 }", "unknown field batch_size"),
    ("max_batch_size {", "Invalid batching parameters file"),
])
def test_bad_parameters_file_names_the_problem(tmp_path, text, message):
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        BatchingParameters.from_file(path)


# The app: real models, real sessions.


def _predict(client, x: np.ndarray):
    response = client.post("/v1/models/mpg:predict", json={"instances": x.tolist()})
    assert response.status_code == 200, response.json
    return response.json["predictions"]


def _infer(client, x: np.ndarray):
    body = {"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    response = client.post("/v2/models/mpg/infer", json=body)
    assert response.status_code == 200, response.json
    return response.json["outputs"][0]["data"]


def test_32_concurrent_clients_get_the_answers_they_get_alone(app, monkeypatch):
    client = app.test_client()
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(32)]
    calls = [_predict if i % 2 else _infer for i in range(32)]
    alone = [call(client, x) for call, x in zip(calls, requests, strict=True)]

    # Slow every model run down a little so requests pile up and merge for certain.
    core = app.extensions["tfkit_serving"]
    with core.repository.servable("mpg") as servable:
        call = servable.call
        monkeypatch.setattr(servable, "call", lambda *a: time.sleep(0.02) or call(*a))
    before = _merged_runs(app)
    barrier = threading.Barrier(32)

    def client_thread(i):
        barrier.wait(WAIT)
        return calls[i](app.test_client(), requests[i])

    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            together = list(pool.map(client_thread, range(32)))
        for got, want in zip(together, alone, strict=True):
            assert np.shape(got) == np.shape(want)
            # A merged run may pick another matmul kernel than a one-row run: the last bit of
            # a float32 can differ. Another request's row would differ in the first digit.
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert _merged_runs(app) > before  # rows really were merged


@pytest.fixture(scope="module")
def mpg_server(model_config_file, start_server):
    """The app's models behind a real server process (one worker, so one batcher)."""
    return start_server(["--model_config_file", str(model_config_file),
                         "--file_system_poll_wait_seconds", "0", "--workers", "1"],
                        "/v1/models/mpg")


def test_concurrent_clients_of_a_server_process_get_the_models_answers(mpg_server, regressor):
    """Over HTTP, 16 clients at once: each gets the model's own outputs for its rows."""
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=(1 + i % 3, 4)).astype(np.float32) for i in range(16)]
    barrier = threading.Barrier(len(rows))

    def client_thread(i):
        barrier.wait(WAIT)
        url = f"{mpg_server.url}/v1/models/mpg:predict"
        response = http.post(url, json={"instances": rows[i].tolist()}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    with concurrent.futures.ThreadPoolExecutor(len(rows)) as pool:
        answers = list(pool.map(client_thread, range(len(rows))))
    for x, got in zip(rows, answers, strict=True):
        # One number per row: the regressor's single output, as TF Serving answers it.
        np.testing.assert_allclose(got, regressor(x).numpy()[:, 0], rtol=2e-6, atol=1e-6)


def _merged_runs(app) -> int:
    """Model runs of more than one row so far, from the batch size histogram."""
    text = app.test_client().get("/monitoring/prometheus/metrics").text
    prefix = ':tensorflow:serving:batching_session:input_batch_size_bucket{model_name="mpg",'
    counts = {line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith(prefix)}
    return counts.get("+Inf", 0) - counts.get("1", 0)


def test_batching_metrics_are_served(client):
    client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    text = client.get("/monitoring/prometheus/metrics").text
    for name in ("queuing_latency", "input_batch_size", "processed_batch_size", "padding_size"):
        assert f':tensorflow:serving:batching_session:{name}_count{{model_name="half_plus_two"}}' \
            in text
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"}' in text
