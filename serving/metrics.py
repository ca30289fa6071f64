"""Prometheus metrics under TF Serving's names, in the text exposition format."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# TF Serving measures request latency in microseconds, in exponential buckets
# (10us * 1.8^i); this keeps 20 of them, 10us .. ~700s.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(20))


class Metrics:
    """Thread-safe request counters and latency histograms.

    Example:
        >>> m = Metrics()
        >>> m.observe("half_plus_two", "predict", "OK", 0.002)
        >>> 'request_count{model_name="half_plus_two",status="OK"} 1' in m.render()
        True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._collectors: list[Callable[[], str]] = []

    def add_collector(self, render: Callable[[], str]) -> None:
        """Appends another source's Prometheus text (e.g. the batcher's) to ``render()``."""
        self._collectors.append(render)

    def observe(self, model_name: str, api: str, status: str, seconds: float) -> None:
        """Records one request.

        Args:
            model_name: The model asked for.
            api: ``predict``, ``classify``, ``regress``, ``status`` or ``metadata``.
            status: Canonical status name, ``"OK"`` on success.
            seconds: Time spent answering.
        """
        micros = seconds * 1e6
        index = bisect.bisect_left(LATENCY_BUCKETS_US, micros)
        with self._lock:
            self._counts[(model_name, status)] += 1
            key = (model_name, api)
            buckets = self._buckets.setdefault(key, [0] * (len(LATENCY_BUCKETS_US) + 1))
            buckets[index] += 1
            self._sums[key] += micros

    def render(self) -> str:
        """The metrics in Prometheus' text format (version 0.0.4)."""
        with self._lock:
            counts = dict(self._counts)
            buckets = {k: list(v) for k, v in self._buckets.items()}
            sums = dict(self._sums)
        lines = [
            f"# HELP {REQUEST_COUNT} The total number of requests.",
            f"# TYPE {REQUEST_COUNT} counter",
        ]
        for (model, status), count in sorted(counts.items()):
            labels = f'model_name="{escape_label(model)}",status="{status}"'
            lines.append(f"{REQUEST_COUNT}{{{labels}}} {count}")
        lines += [
            f"# HELP {REQUEST_LATENCY} Distribution of wall time (in microseconds) "
            "for Tensorflow Serving request.",
            f"# TYPE {REQUEST_LATENCY} histogram",
        ]
        for (model, api), counts_by_bucket in sorted(buckets.items()):
            labels = f'model_name="{escape_label(model)}",API="{api}",entrypoint="REST"'
            lines += histogram_lines(
                REQUEST_LATENCY, labels, LATENCY_BUCKETS_US, counts_by_bucket,
                sums[(model, api)],
            )
        return "\n".join(lines) + "\n" + "".join(collect() for collect in self._collectors)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def histogram_lines(
    name: str, labels: str, bounds: Sequence[float], counts: Sequence[int], total: float
) -> list[str]:
    """One Prometheus histogram series: cumulative buckets, ``+Inf``, sum and count.

    Args:
        name: The metric name.
        labels: The series' labels, already formatted (``model_name="m",...``).
        bounds: The buckets' upper bounds.
        counts: One count per bound, then the count above the last bound.
        total: The sum of all observed values.
    """
    lines, running = [], 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{{labels},le="{bound:.6g}"}} {running}')
    running += counts[len(bounds)]
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {running}')
    lines.append(f"{name}_sum{{{labels}}} {total:.6g}")
    lines.append(f"{name}_count{{{labels}}} {running}")
    return lines
