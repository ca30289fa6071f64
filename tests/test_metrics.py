"""Prometheus metrics: TF Serving's names and text, and label values only for models the
server has."""

import random
import shutil

import pytest
import requests
from conftest import REFERENCE_MODELS, TESTDATA

from serving.batching import BatchMetrics
from serving.metrics import (
    GRPC,
    LATENCY_BUCKETS_US,
    REQUEST_COUNT,
    UNKNOWN_MODEL,
    Metrics,
    RequestTimes,
    VersionStatistics,
)

RANDOM_NAMES = 5000
TIMEOUT = 10
LATENCY = ":tensorflow:serving:request_latency"


def _series(text: str) -> dict[str, float]:
    """The text format's samples, ``name{labels}`` → value."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _worker_metrics(requests_ok: int, seconds: float) -> Metrics:
    metrics = Metrics()
    metrics.add_collector(BatchMetrics())
    for _ in range(requests_ok):
        metrics.observe("m", "predict", "OK", seconds)
    metrics.observe("m", "predict", "INVALID_ARGUMENT", seconds)
    return metrics


def test_requests_render_in_tf_serving_text():
    metrics = _worker_metrics(3, 0.001)
    metrics.observe("m", "predict", "OK", 0.5)
    text = metrics.render()
    lines = text.splitlines()

    # TF Serving's counter name: no "_total" (prometheus_client's own text would add one).
    assert f"# TYPE {REQUEST_COUNT} counter" in lines
    assert f'{REQUEST_COUNT}{{model_name="m",status="OK"}} 4' in lines
    assert f'{REQUEST_COUNT}{{model_name="m",status="INVALID_ARGUMENT"}} 1' in lines
    assert "_total" not in text and "_created" not in text
    # TF Serving's label order, le last; bounds as 10 and 32.4, not 10.0 and 32.400000000000006.
    labels = 'model_name="m",API="predict",entrypoint="REST"'
    assert f"# TYPE {LATENCY} histogram" in lines
    assert f'{LATENCY}_bucket{{{labels},le="10"}} 0' in lines
    assert f'{LATENCY}_bucket{{{labels},le="32.4"}} 0' in lines
    # 1 ms falls in the bucket bounded by ~1102 us, 0.5 s well above it.
    bound = f"{min(b for b in LATENCY_BUCKETS_US if b >= 1000):.6g}"
    assert f'{LATENCY}_bucket{{{labels},le="{bound}"}} 4' in lines
    assert f'{LATENCY}_bucket{{{labels},le="+Inf"}} 5' in lines
    assert f"{LATENCY}_count{{{labels}}} 5" in lines
    assert _series(text)[f"{LATENCY}_sum{{{labels}}}"] == pytest.approx(4 * 1000 + 500000)
    # A histogram's series in order: buckets by bound, then sum, then count.
    series = [line.split("{")[0] for line in lines if line.startswith(LATENCY)]
    assert series == [f"{LATENCY}_bucket"] * (len(LATENCY_BUCKETS_US) + 1) + [
        f"{LATENCY}_sum", f"{LATENCY}_count"]


def test_grpc_requests_are_their_own_latency_series():
    metrics = Metrics()
    metrics.observe("m", "predict", "OK", 0.001)
    metrics.observe("m", "predict", "OK", 0.001, entrypoint=GRPC)
    samples = _series(metrics.render())
    assert samples[f'{REQUEST_COUNT}{{model_name="m",status="OK"}}'] == 2
    for entrypoint in ("REST", "GRPC"):
        labels = f'model_name="m",API="predict",entrypoint="{entrypoint}"'
        assert samples[f"{LATENCY}_count{{{labels}}}"] == 1


def test_batch_metrics_render_runs_and_sizes():
    batches = BatchMetrics()
    batches.record("m", (5.0, 7.0), rows=3, padding=1)
    batches.record("m", (2.0,), rows=8, padding=0)
    batches.record("n", (1.0,), rows=1, padding=0)
    metrics = Metrics()
    metrics.add_collector(batches)
    rendered = metrics.render()
    assert batches.render() in rendered  # the batcher's families, in the server's scrape
    merged = _series(rendered)

    name = ":tensorflow:serving:batching_session:"
    assert f"# TYPE {name}wrapped_run_count counter" in rendered
    assert merged[f'{name}wrapped_run_count{{model_name="m"}}'] == 3
    assert merged[f'{name}wrapped_run_count{{model_name="n"}}'] == 1
    assert merged[f'{name}queuing_latency_count{{model_name="m"}}'] == 3
    assert merged[f'{name}queuing_latency_sum{{model_name="m"}}'] == 14
    assert merged[f'{name}input_batch_size_sum{{model_name="m"}}'] == 11
    assert merged[f'{name}input_batch_size_bucket{{model_name="m",le="1"}}'] == 0
    assert merged[f'{name}input_batch_size_bucket{{model_name="m",le="4"}}'] == 1
    assert merged[f'{name}input_batch_size_bucket{{model_name="m",le="8"}}'] == 2
    assert merged[f'{name}processed_batch_size_sum{{model_name="m"}}'] == 12
    assert merged[f'{name}padding_size_sum{{model_name="m"}}'] == 1


def test_label_values_are_escaped():
    metrics = Metrics()
    metrics.observe('a"b\\c\nd', "predict", "OK", 0.001)
    assert f'{REQUEST_COUNT}{{model_name="a\\"b\\\\c\\nd",status="OK"}} 1' in metrics.render()


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_server):
    repo = tmp_path_factory.mktemp("metrics-models")
    shutil.copytree(TESTDATA / REFERENCE_MODELS["half_plus_two"], repo / "half_plus_two")
    return start_server(["--models", str(repo), "--workers", "1",
                         "--file_system_poll_wait_seconds", "0"], "/v1/models/half_plus_two")


def _unknown_model_calls(url: str):
    """Requests for a named model, one per API that counts requests: (method, url, body)."""
    x = {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}
    return [
        lambda name: ("POST", f"{url}/v1/models/{name}:predict", {"instances": [1.0]}),
        lambda name: ("POST", f"{url}/v2/models/{name}/infer", {"inputs": [x]}),
        lambda name: ("GET", f"{url}/v1/models/{name}", None),
        lambda name: ("GET", f"{url}/v2/models/{name}", None),
    ]


def test_requests_for_unknown_models_leave_the_scrape_flat(server):
    calls = _unknown_model_calls(server.url)
    rng = random.Random(0)
    names = [f"m{rng.getrandbits(64):016x}" for _ in range(RANDOM_NAMES)]
    scrape = f"{server.url}/monitoring/prometheus/metrics"
    with requests.Session() as session:  # keep-alive: one connection for all
        for call in calls:  # once each first: the unknown-model series exist from here on
            method, url, body = call("not_yet_seen")
            assert session.request(method, url, json=body, timeout=TIMEOUT).status_code == 404
        before = session.get(scrape, timeout=TIMEOUT).text
        for i, name in enumerate(names):
            method, url, body = calls[i % len(calls)](name)
            response = session.request(method, url, json=body, timeout=TIMEOUT)
            assert response.status_code == 404, response.text
        after = session.get(scrape, timeout=TIMEOUT).text

    assert sorted(_series(after)) == sorted(_series(before))
    # Only counters' digits grow: 1 -> 1251 on some 90 lines.
    assert len(after.encode()) - len(before.encode()) < 400
    unknown = f'{REQUEST_COUNT}{{model_name="{UNKNOWN_MODEL}",status="NOT_FOUND"}}'
    assert _series(after)[unknown] == len(calls) + RANDOM_NAMES
    assert not [name for name in names if name in after]


def test_known_models_keep_their_label(server):
    with requests.Session() as session:
        predict = session.post(f"{server.url}/v1/models/half_plus_two:predict",
                               json={"instances": [1.0]}, timeout=TIMEOUT)
        assert predict.json() == {"predictions": [2.5]}
        text = session.get(f"{server.url}/monitoring/prometheus/metrics", timeout=TIMEOUT).text
    assert _series(text)[f'{REQUEST_COUNT}{{model_name="half_plus_two",status="OK"}}'] >= 1


def test_version_statistics_split_a_request_into_its_phases():
    stats = VersionStatistics()
    stats.executed(rows=3, ns=700)
    stats.succeeded(RequestTimes(start=0, run_start=100, run_end=1000, end=1200, run_ns=700,
                                 rows=3))
    stats.failed(50)
    numbers = stats.as_json()
    assert (numbers["inference_count"], numbers["execution_count"]) == (3, 1)
    assert numbers["inference_stats"]["success"] == {"count": 1, "ns": 1200}
    assert numbers["inference_stats"]["fail"] == {"count": 1, "ns": 50}
    assert numbers["inference_stats"]["compute_input"] == {"count": 1, "ns": 100}
    assert numbers["inference_stats"]["queue"] == {"count": 1, "ns": 200}
    assert numbers["inference_stats"]["compute_infer"] == {"count": 1, "ns": 700}
    assert numbers["inference_stats"]["compute_output"] == {"count": 1, "ns": 200}
    assert numbers["batch_stats"] == [{"batch_size": 3, "compute_infer": {"count": 1, "ns": 700}}]
