"""Request metrics in TF Serving's names, kept by prometheus_client, and per-version statistics.

prometheus_client keeps the numbers. With ``PROMETHEUS_MULTIPROC_DIR`` set before it is
imported (``tfkit serve --workers N`` sets it, see ``serving/metric_snapshots.py``),
every process writes its numbers to files in that folder and a scrape sums all of
them. The text is written here (``exposition``), in TF Serving's form: its counters
are named without the ``_total`` that prometheus_client's own text format appends,
its labels come in its order (``model_name`` first, ``le`` last), and counts are
integers.

Label values name only models the server has: a request names any model it likes,
and each new label value is a new series kept for the life of the process (and of
the folder), so unknown names all count under ``UNKNOWN_MODEL``.

``VersionStatistics`` holds one model version's counts and times in the terms of
Triton's statistics extension (``GET /v2/models/{m}/stats``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from serving.metric_snapshots import MULTIPROCESS_DIR

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# TF Serving measures request latency in microseconds, in exponential buckets
# (10us * 1.8^i); this keeps 20 of them, 10us .. ~700s.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(20))
# The model_name label of requests for models the server does not have. Any UTF-8
# text is a valid Prometheus label value (only label names are restricted); the
# angle brackets keep it apart from the folder names models usually have.
UNKNOWN_MODEL = "<unknown>"
REST, GRPC = "REST", "GRPC"  # TF Serving's entrypoint label values
# TF Serving's label order; any other label follows these, and "le" comes last.
_LABEL_ORDER = ("model_name", "API", "entrypoint", "status")


class Collector(Protocol):
    """A source of metric families, such as the batcher's ``BatchMetrics``."""

    def collect(self) -> Iterable[Metric]: ...


class Metrics:
    """Request counters and latency histograms; thread-safe.

    ``render()`` shows this process's numbers, or, when prometheus_client keeps
    them in ``directory``, the sum over every process that wrote there.

    Measured against plain dicts under a lock shared through per-worker JSON
    files once a second (benchmarks/RESULTS.md): CPU per predict request in the
    app's WSGI call, half_plus_two, medians of 3 interleaved runs: 87.5 us with
    those, 85.5 us with prometheus_client in one process, 118.8 us with a
    multiprocess folder, where each of a request's 12 metric updates is written
    to a memory-mapped file under a lock (1.7 us an update, 0.6 us in memory).
    Served over HTTP under load a request took 1.1 to 1.3 ms of CPU (Serving
    speed, RESULTS.md), so several workers pay 2 to 3 % for totals that are
    exact and live, rather than up to a second old.

    Args:
        directory: prometheus_client's multiprocess folder; by default
            ``$PROMETHEUS_MULTIPROC_DIR``, which must have been set before
            prometheus_client was imported for this process's numbers to go there.

    Example:
        >>> m = Metrics()
        >>> m.observe("half_plus_two", "predict", "OK", 0.002)
        >>> 'request_count{model_name="half_plus_two",status="OK"} 1' in m.render()
        True
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = directory or os.environ.get(MULTIPROCESS_DIR) or None
        self.registry = CollectorRegistry(auto_describe=True)
        self._count = Counter(REQUEST_COUNT, "The total number of requests.",
                              ["model_name", "status"], registry=self.registry)
        self._latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self._collectors: list[Collector] = [self.registry]
        self._series: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def add_collector(self, collector: Collector) -> None:
        """Adds another source's metrics (e.g. the batcher's) to ``collect()`` and ``render()``.

        With a multiprocess folder the scrape reads every prometheus_client metric from
        the folder's files, this source's included, so it is not collected again.
        """
        self._collectors.append(collector)

    def observe(self, model_name: str, api: str, status: str, seconds: float, *,
                entrypoint: str = REST) -> None:
        """Counts one request, as TF Serving does for every API call.

        Args:
            model_name: A model the server has, or ``UNKNOWN_MODEL``; never unchecked
                request text, since every value is a series kept for good.
            api: ``predict``, ``classify``, ``regress``, ``status`` or ``metadata``.
            status: Canonical status name, ``"OK"`` on success.
            seconds: Time spent answering.
            entrypoint: ``REST`` or ``GRPC``: which server took the request.
        """
        key = (model_name, api, status, entrypoint)
        series = self._series.get(key)
        if series is None:  # labels() takes a lock and builds the key: once per series
            series = self._series[key] = (self._count.labels(model_name, status),
                                          self._latency.labels(model_name, api, entrypoint))
        series[0].inc()
        series[1].observe(seconds * 1e6)

    def collect(self) -> Iterable[Metric]:
        """The metric families: every process's in ``directory``, else this process's."""
        if self.directory is not None:
            return MultiProcessCollector(None, path=os.fspath(self.directory)).collect()
        return [family for source in self._collectors for family in source.collect()]

    def render(self) -> str:
        """The metrics in Prometheus' text format (version 0.0.4), as TF Serving writes it."""
        return exposition(self.collect())


def exposition(families: Iterable[Metric]) -> str:
    """Prometheus' text format (0.0.4) for ``families``, in TF Serving's form.

    prometheus_client's ``generate_latest`` would name a counter ``<name>_total``,
    sort labels by name and write counts as floats (``1.0``); TF Serving writes
    ``:tensorflow:serving:request_count{model_name="m",status="OK"} 1``, and
    clients of the TF Serving metrics match those names.

    Example:
        >>> m = Metrics()
        >>> m.observe("m", "predict", "OK", 0.5)
        >>> print(exposition(m.collect()).splitlines()[2])
        :tensorflow:serving:request_count{model_name="m",status="OK"} 1
    """
    lines = []
    for family in sorted(families, key=lambda f: f.name):
        text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {family.name} {text}", f"# TYPE {family.name} {family.type}"]
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        for sample in sorted(samples, key=_sample_order):
            name = family.name if family.type == "counter" else sample.name
            labels = ",".join(f'{key}="{_label_value(key, value)}"'
                              for key, value in sorted(sample.labels.items(), key=_label_order))
            lines.append(f"{name}{{{labels}}} {_number(sample.value)}" if labels
                         else f"{name} {_number(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _label_order(item: tuple[str, str]) -> tuple[int, str]:
    key = item[0]
    if key == "le":
        return len(_LABEL_ORDER) + 1, key
    return (_LABEL_ORDER.index(key) if key in _LABEL_ORDER else len(_LABEL_ORDER)), key


def _sample_order(sample: Any) -> tuple:
    """One series after another; a histogram's buckets by bound, then its sum and count."""
    series = tuple(v for k, v in sorted(sample.labels.items(), key=_label_order) if k != "le")
    suffix = ("_bucket", "_sum", "_count")
    rank = next((i for i, end in enumerate(suffix) if sample.name.endswith(end)), -1)
    return series, rank, float(sample.labels.get("le", "0"))


def _label_value(key: str, value: str) -> str:
    if key == "le":  # 10.0 and 32.400000000000006 as TF Serving writes them: 10, 32.4
        bound = float(value)
        return "+Inf" if math.isinf(bound) else f"{bound:.6g}"
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) else repr(float(value))


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
