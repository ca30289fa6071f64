"""Prometheus metrics: TF Serving's names, and several processes' numbers summed into one."""

import json

from serving.batching import BatchMetrics
from serving.metrics import LATENCY_BUCKETS_US, REQUEST_COUNT, Metrics, merge_states


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


def test_merged_states_render_summed_requests_buckets_and_sums():
    fast, slow = _worker_metrics(3, 0.001), _worker_metrics(2, 0.5)
    # Through JSON, as the numbers travel between workers.
    states = [json.loads(json.dumps(m.state())) for m in (fast, slow)]
    merged = _series(fast.render(merge_states(states)))

    labels = 'model_name="m",API="predict",entrypoint="REST"'
    assert merged[f'{REQUEST_COUNT}{{model_name="m",status="OK"}}'] == 5
    assert merged[f'{REQUEST_COUNT}{{model_name="m",status="INVALID_ARGUMENT"}}'] == 2
    assert merged[f":tensorflow:serving:request_latency_count{{{labels}}}"] == 7
    assert merged[f":tensorflow:serving:request_latency_sum{{{labels}}}"] == 4 * 1000 + 3 * 500000
    # 1 ms falls in the bucket bounded by ~1102 us, 0.5 s well above it.
    bound = f"{min(b for b in LATENCY_BUCKETS_US if b >= 1000):.6g}"
    assert merged[f':tensorflow:serving:request_latency_bucket{{{labels},le="{bound}"}}'] == 4
    assert merged[f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}}'] == 7


def test_merged_batch_metrics_render_summed_runs_and_sizes():
    one, two = BatchMetrics(), BatchMetrics()
    one.record("m", (5.0, 7.0), rows=3, padding=1)
    two.record("m", (2.0,), rows=8, padding=0)
    two.record("n", (1.0,), rows=1, padding=0)
    merged = _series(one.render(merge_states([one.state(), two.state()])))

    name = ":tensorflow:serving:batching_session:"
    assert merged[f'{name}wrapped_run_count{{model_name="m"}}'] == 3
    assert merged[f'{name}wrapped_run_count{{model_name="n"}}'] == 1
    assert merged[f'{name}queuing_latency_count{{model_name="m"}}'] == 3
    assert merged[f'{name}queuing_latency_sum{{model_name="m"}}'] == 14
    assert merged[f'{name}input_batch_size_sum{{model_name="m"}}'] == 11
    assert merged[f'{name}input_batch_size_bucket{{model_name="m",le="4"}}'] == 1
    assert merged[f'{name}input_batch_size_bucket{{model_name="m",le="8"}}'] == 2
    assert merged[f'{name}processed_batch_size_sum{{model_name="m"}}'] == 12
    assert merged[f'{name}padding_size_sum{{model_name="m"}}'] == 1


def test_render_adds_the_peers_states():
    own, peer = _worker_metrics(1, 0.01), _worker_metrics(4, 0.01)
    alone = _series(own.render())[f'{REQUEST_COUNT}{{model_name="m",status="OK"}}']
    own.add_peers(lambda: [peer.state()])
    together = _series(own.render())[f'{REQUEST_COUNT}{{model_name="m",status="OK"}}']
    assert (alone, together) == (1, 5)


def test_one_process_renders_as_before_state_and_merge():
    metrics = _worker_metrics(2, 0.02)
    assert metrics.render() == metrics.render(merge_states([metrics.state()]))
    assert f'{REQUEST_COUNT}{{model_name="m",status="OK"}} 2\n' in metrics.render()
