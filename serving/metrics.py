"""Prometheus metrics under TF Serving's names, in the text exposition format.

Each source of metrics (request counts and latencies here, the batcher's in
``serving/batching.py``) can export its raw numbers as a plain JSON-able
``State``, and renders from a ``Merged`` sum of any number of such states, so
several worker processes can show one total (``serving/metric_snapshots.py``).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# TF Serving measures request latency in microseconds, in exponential buckets
# (10us * 1.8^i); this keeps 20 of them, 10us .. ~700s.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(20))

# metric name -> rows of [*label values, [numbers]]; numbers add up across processes.
State = dict[str, list[list]]
# metric name -> label values -> numbers, summed over states.
Merged = dict[str, dict[tuple[str, ...], list[float]]]


class Collector(Protocol):
    """A source of metrics whose numbers can be summed across processes."""

    def state(self) -> State: ...

    def render(self, merged: Merged | None = None) -> str: ...


def merge_states(states: Iterable[State]) -> Merged:
    """Sums the numbers of every series (same metric, same label values) over ``states``.

    Example:
        >>> one = {"runs": [["m", [1, 2.5]]]}
        >>> merge_states([one, one, {"runs": [["n", [1, 0.5]]]}])
        {'runs': {('m',): [2, 5.0], ('n',): [1, 0.5]}}
    """
    merged: Merged = defaultdict(dict)
    for state in states:
        for name, rows in state.items():
            series = merged[name]
            for *labels, numbers in rows:
                key = tuple(labels)
                total = series.get(key)
                series[key] = list(numbers) if total is None else [
                    a + b for a, b in zip(total, numbers, strict=True)
                ]
    return dict(merged)


class Metrics:
    """Thread-safe request counters and latency histograms.

    ``render()`` shows this process's numbers plus, once ``add_peers`` is given
    a source, every other worker's latest state.

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
        self._collectors: list[Collector] = []
        self._peers: Callable[[], list[State]] | None = None

    def add_collector(self, collector: Collector) -> None:
        """Adds another source's metrics (e.g. the batcher's) to ``state()`` and ``render()``."""
        self._collectors.append(collector)

    def add_peers(self, peers: Callable[[], list[State]]) -> None:
        """Makes ``render()`` add the states ``peers()`` returns (the other workers')."""
        self._peers = peers

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

    def state(self) -> State:
        """This process's numbers, its collectors' included, as JSON-able data."""
        with self._lock:
            state: State = {
                REQUEST_COUNT: [[model, status, [n]]
                                for (model, status), n in self._counts.items()],
                # The sum rides after the bucket counts.
                REQUEST_LATENCY: [[model, api, [*counts, self._sums[(model, api)]]]
                                  for (model, api), counts in self._buckets.items()],
            }
        for collector in self._collectors:
            state.update(collector.state())
        return state

    def render(self, merged: Merged | None = None) -> str:
        """The metrics in Prometheus' text format (version 0.0.4).

        Args:
            merged: Numbers to show; by default this process's and its peers'.
        """
        if merged is None:
            merged = merge_states([self.state(), *(self._peers() if self._peers else ())])
        lines = [
            f"# HELP {REQUEST_COUNT} The total number of requests.",
            f"# TYPE {REQUEST_COUNT} counter",
        ]
        for (model, status), (count,) in sorted(merged.get(REQUEST_COUNT, {}).items()):
            labels = f'model_name="{escape_label(model)}",status="{status}"'
            lines.append(f"{REQUEST_COUNT}{{{labels}}} {count}")
        lines += [
            f"# HELP {REQUEST_LATENCY} Distribution of wall time (in microseconds) "
            "for Tensorflow Serving request.",
            f"# TYPE {REQUEST_LATENCY} histogram",
        ]
        for (model, api), numbers in sorted(merged.get(REQUEST_LATENCY, {}).items()):
            labels = f'model_name="{escape_label(model)}",API="{api}",entrypoint="REST"'
            lines += histogram_lines(
                REQUEST_LATENCY, labels, LATENCY_BUCKETS_US, numbers[:-1], numbers[-1]
            )
        text = "\n".join(lines) + "\n"
        return text + "".join(collector.render(merged) for collector in self._collectors)


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
