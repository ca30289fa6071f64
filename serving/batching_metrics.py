"""Dynamic batching's metrics: batch sizes and queueing times under TF Serving's names."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric

from serving.metrics import LATENCY_BUCKETS_US, exposition

# Batch size buckets for the histograms: 1, 2, 4, ... 4096 rows.
SIZE_BUCKETS = tuple(2**i for i in range(13))
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
PADDING_SIZE = ":tensorflow:serving:batching_session:padding_size"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"


class BatchMetrics:
    """Batch sizes and queueing times in TF Serving's metric names; thread-safe.

    Example:
        >>> metrics = BatchMetrics()
        >>> metrics.record("m", waits=(120.0, 80.0), rows=3, padding=1)
        >>> 'wrapped_run_count{model_name="m"} 2' in metrics.render()
        True
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._runs = Counter(WRAPPED_RUN_COUNT, "Requests that went through the batcher.",
                             ["model_name"], registry=self.registry)
        self._waits = self._histogram(
            QUEUING_LATENCY, "Time (in microseconds) a request waited for its batch.",
            LATENCY_BUCKETS_US)
        self._input = self._histogram(INPUT_BATCH_SIZE, "Rows of requests in each batch.")
        self._processed = self._histogram(PROCESSED_BATCH_SIZE,
                                          "Rows of each model run, padding included.")
        self._padding = self._histogram(PADDING_SIZE,
                                        "Filler rows added to reach an allowed batch size.")
        self._series: dict[str, tuple] = {}

    def _histogram(self, name: str, text: str, buckets: Sequence[float] = SIZE_BUCKETS
                   ) -> Histogram:
        return Histogram(name, text, ["model_name"], buckets=buckets, registry=self.registry)

    def record(self, model: str, waits: Sequence[float], rows: int, padding: int) -> None:
        """Records one model run: each request's wait (microseconds), rows and filler rows."""
        series = self._series.get(model)
        if series is None:  # labels() takes a lock and builds the key: once per model
            series = self._series[model] = tuple(metric.labels(model) for metric in (
                self._runs, self._waits, self._input, self._processed, self._padding))
        runs, waited, inputs, processed, padded = series
        runs.inc(len(waits))
        for micros in waits:
            waited.observe(micros)
        inputs.observe(rows)
        processed.observe(rows + padding)
        padded.observe(padding)

    def collect(self) -> Iterable[Metric]:
        """The metric families, for ``serving.metrics.Metrics.add_collector``."""
        return self.registry.collect()

    def render(self) -> str:
        """These metrics alone in Prometheus' text format, as TF Serving writes it."""
        return exposition(self.collect())
