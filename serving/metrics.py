"""Request metrics: Prometheus' under TF Serving's names, and per-version inference statistics.

Each source of metrics (request counts and latencies here, the batcher's in
``serving/batching.py``) can export its raw numbers as a plain JSON-able
``State``, and renders from a ``Merged`` sum of any number of such states, so
several worker processes can show one total (``serving/metric_snapshots.py``).

Label values name only models the server has: a request names any model it
likes, and each new label value is a new series kept for the life of the
process, so unknown names all count under ``UNKNOWN_MODEL``.

``VersionStatistics`` holds one model version's counts and times in the terms of
Triton's statistics extension (``GET /v2/models/{m}/stats``).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# TF Serving measures request latency in microseconds, in exponential buckets
# (10us * 1.8^i); this keeps 20 of them, 10us .. ~700s.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(20))
# The model_name label of requests for models the server does not have. Any UTF-8
# text is a valid Prometheus label value (only label names are restricted); the
# angle brackets keep it apart from the folder names models usually have.
UNKNOWN_MODEL = "<unknown>"

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
            model_name: A model the server has, or ``UNKNOWN_MODEL``; never unchecked
                request text, since every value is a series kept for good.
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


@dataclasses.dataclass
class Duration:
    """A count and a total time in nanoseconds: Triton's ``$duration_stat``."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclasses.dataclass(frozen=True)
class RequestTimes:
    """A successful inference request's ``time.perf_counter_ns()`` readings, and its rows."""

    start: int
    run_start: int  # inputs decoded: the model call begins (batcher included)
    run_end: int  # outputs back from the batcher
    end: int  # answer encoded
    run_ns: int  # model runs that took place in this request's own thread
    rows: int


class VersionStatistics:
    """Counts and cumulative times of one model version's inference requests and model runs.

    A request's time splits into ``compute_input`` (parse and decode), ``queue``,
    ``compute_infer`` and ``compute_output`` (encode). A batch of merged requests
    runs in one of their threads: its run counts as that request's
    ``compute_infer`` and as ``queue`` for the others, so the ``compute_infer``
    total is the time the model actually ran.

    Example:
        >>> stats = VersionStatistics()
        >>> stats.executed(rows=4, ns=900)
        >>> stats.succeeded(RequestTimes(0, 100, 1100, 1200, run_ns=900, rows=4))
        >>> stats.as_json()["inference_stats"]["success"]
        {'count': 1, 'ns': 1200}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases = {name: Duration() for name in (
            "success", "fail", "queue", "compute_input", "compute_infer", "compute_output")}
        self._batches: dict[int, Duration] = {}
        self._inference_count = 0
        self._execution_count = 0
        self._last_inference_ms = 0

    def executed(self, rows: int, ns: int) -> None:
        """Records one successful model run on a batch of ``rows``, taking ``ns``."""
        with self._lock:
            self._execution_count += 1
            self._batches.setdefault(rows, Duration()).add(ns)

    def succeeded(self, times: RequestTimes) -> None:
        """Records an answered request: its rows and where its time went."""
        with self._lock:
            self._last_inference_ms = time.time_ns() // 1_000_000
            self._inference_count += times.rows
            self._phases["success"].add(times.end - times.start)
            self._phases["compute_input"].add(times.run_start - times.start)
            self._phases["queue"].add(times.run_end - times.run_start - times.run_ns)
            self._phases["compute_infer"].add(times.run_ns)
            self._phases["compute_output"].add(times.end - times.run_end)

    def failed(self, ns: int) -> None:
        """Records a request for this version that got an error after ``ns``."""
        with self._lock:
            self._last_inference_ms = time.time_ns() // 1_000_000
            self._phases["fail"].add(ns)

    def as_json(self) -> dict[str, Any]:
        """Triton's ``$model_stat``, but for ``name`` and ``version``."""
        with self._lock:
            phases = {name: dataclasses.asdict(d) for name, d in self._phases.items()}
            batches = [{"batch_size": rows, "compute_infer": dataclasses.asdict(d)}
                       for rows, d in sorted(self._batches.items())]
            return {
                "last_inference": self._last_inference_ms,
                "inference_count": self._inference_count,
                "execution_count": self._execution_count,
                # No response cache: no hits and no misses.
                "inference_stats": {**phases, "cache_hit": {"count": 0, "ns": 0},
                                    "cache_miss": {"count": 0, "ns": 0}},
                "response_stats": {},  # only decoupled models (several responses) have these
                "batch_stats": batches,
                "memory_usage": [],
            }
