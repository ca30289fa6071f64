"""Dynamic batching's metrics: batch sizes and queueing times under TF Serving's names."""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Sequence

from serving.metrics import (
    LATENCY_BUCKETS_US,
    Merged,
    State,
    escape_label,
    histogram_lines,
    merge_states,
)

# Batch size buckets for the histograms: 1, 2, 4, ... 4096 rows.
SIZE_BUCKETS = tuple(2**i for i in range(13))
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
PADDING_SIZE = ":tensorflow:serving:batching_session:padding_size"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"


class BatchMetrics:
    """Batch sizes and queueing times in TF Serving's metric names (Prometheus text)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._histograms: dict[tuple[str, str], list[float]] = {}
        self._runs: dict[str, int] = collections.defaultdict(int)

    def record(self, model: str, waits: Sequence[float], rows: int, padding: int) -> None:
        """Records one model run: each request's wait (microseconds), rows and filler rows."""
        size = len(SIZE_BUCKETS)
        with self._lock:
            self._runs[model] += len(waits)
            for micros in waits:
                index = bisect.bisect_left(LATENCY_BUCKETS_US, micros)
                self._add(QUEUING_LATENCY, model, index, micros, len(LATENCY_BUCKETS_US))
            self._add(INPUT_BATCH_SIZE, model, bisect.bisect_left(SIZE_BUCKETS, rows), rows, size)
            total = rows + padding
            self._add(PROCESSED_BATCH_SIZE, model, bisect.bisect_left(SIZE_BUCKETS, total),
                      total, size)
            self._add(PADDING_SIZE, model, bisect.bisect_left(SIZE_BUCKETS, padding), padding,
                      size)

    def _add(self, name: str, model: str, index: int, value: float, size: int) -> None:
        counts = self._histograms.get((name, model))
        if counts is None:
            counts = self._histograms[(name, model)] = [0] * (size + 2)
        counts[index] += 1
        counts[-1] += value  # the running sum rides in the last slot

    def state(self) -> State:
        """The numbers so far as JSON-able data (``serving/metrics.py`` merges and renders them)."""
        with self._lock:
            state: State = {WRAPPED_RUN_COUNT: [[model, [n]] for model, n in self._runs.items()]}
            for (name, model), counts in self._histograms.items():
                # counts: one per bound, the count above the last bound, then the sum.
                state.setdefault(name, []).append([model, list(counts)])
        return state

    def render(self, merged: Merged | None = None) -> str:
        """The metrics in Prometheus' text format.

        Args:
            merged: Numbers to show, e.g. several workers' summed; by default this batcher's.
        """
        if merged is None:
            merged = merge_states([self.state()])
        lines = [
            f"# HELP {WRAPPED_RUN_COUNT} Requests that went through the batcher.",
            f"# TYPE {WRAPPED_RUN_COUNT} counter",
        ]
        lines += [f'{WRAPPED_RUN_COUNT}{{model_name="{escape_label(model)}"}} {n}'
                  for (model,), (n,) in sorted(merged.get(WRAPPED_RUN_COUNT, {}).items())]
        helps = {
            QUEUING_LATENCY: ("Time (in microseconds) a request waited for its batch.",
                              LATENCY_BUCKETS_US),
            INPUT_BATCH_SIZE: ("Rows of requests in each batch.", SIZE_BUCKETS),
            PROCESSED_BATCH_SIZE: ("Rows of each model run, padding included.", SIZE_BUCKETS),
            PADDING_SIZE: ("Filler rows added to reach an allowed batch size.", SIZE_BUCKETS),
        }
        for name, (text, bounds) in helps.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
            for (model,), counts in sorted(merged.get(name, {}).items()):
                lines += histogram_lines(
                    name, f'model_name="{escape_label(model)}"', bounds, counts[:-1], counts[-1]
                )
        return "\n".join(lines) + "\n"
