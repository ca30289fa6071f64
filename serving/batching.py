"""Dynamic batching: concurrent requests for one model signature merged into one session run.

There is no scheduler thread. Each (model version, signature, inputs, outputs)
has a queue with ``num_batch_threads`` run slots. A request that finds a free
slot runs at once, taking along every compatible request already waiting (so a
lone request never waits). A request that finds every slot busy waits in the
queue; when a run ends, the thread that ran it hands the slot to the oldest
waiting request, which runs the next batch with the requests queued behind it.
Batches therefore grow exactly as fast as the model is the bottleneck.

Requests merge when their inputs agree on dtype and on every dimension but the
first, and the signature declares a leading batch dimension (``-1``) on every
input and output; anything else runs alone. If a merged run fails, or returns
an output whose first dimension is not the batch's, each request is re-run on
its own, so one bad request never fails (or mixes with) another.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import logging
import os
import pathlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from serving.errors import ServingError
from serving.metrics import (
    LATENCY_BUCKETS_US,
    Merged,
    State,
    escape_label,
    histogram_lines,
    merge_states,
)
from serving.model_config import _parse_text_proto

logger = logging.getLogger(__name__)

# Batch size buckets for the histograms: 1, 2, 4, ... 4096 rows.
SIZE_BUCKETS = tuple(2**i for i in range(13))
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
PADDING_SIZE = ":tensorflow:serving:batching_session:padding_size"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"


class Unavailable(ServingError):
    """The batch queue is full; the client should back off and retry."""

    code = "UNAVAILABLE"


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters``, with its field names and defaults.

    Attributes:
        enabled: Merge concurrent requests (``--enable_batching``).
        max_batch_size: Most rows in one merged run; a larger request runs alone.
        batch_timeout_micros: How long a batch may wait to fill; only spent while
            other requests are still being parsed (an idle server never waits).
        num_batch_threads: Runs of one model signature at the same time.
        max_enqueued_batches: Queue bound, in batches of ``max_batch_size`` rows;
            a request beyond it is refused with 503 (TF Serving's UNAVAILABLE).
        allowed_batch_sizes: Merged runs are padded up to one of these sizes
            (increasing, the last equal to ``max_batch_size``); empty: no padding.
    """

    enabled: bool = True
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError(
                "allowed_batch_sizes must increase and end with max_batch_size "
                f"({self.max_batch_size}), got {sizes}"
            )

    @classmethod
    def from_file(cls, path: str | pathlib.Path, **overrides: object) -> BatchingParameters:
        """Reads TF Serving's ``--batching_parameters_file`` (text-proto).

        Example file::

            max_batch_size { value: 64 }
            batch_timeout_micros { value: 1000 }
            num_batch_threads { value: 2 }
            max_enqueued_batches { value: 100 }
            allowed_batch_sizes: 16
            allowed_batch_sizes: 64

        ``thread_pool_name`` and ``pad_variable_length_inputs`` are accepted and
        ignored (requests of different lengths run as separate batches instead).

        Raises:
            ValueError: The file does not parse or has an unknown field.
        """
        try:
            tree = _parse_text_proto(pathlib.Path(path).read_text())
        except ValueError as exc:
            raise ValueError(f"Invalid batching parameters file '{path}': {exc}") from None
        values: dict[str, object] = {}
        for key, node in tree.items():
            if key in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                       "max_enqueued_batches"):
                values[key] = int(node["value"] if isinstance(node, dict) else node)
            elif key == "allowed_batch_sizes":
                values[key] = tuple(int(v) for v in (node if isinstance(node, list) else [node]))
            elif key not in ("thread_pool_name", "pad_variable_length_inputs"):
                raise ValueError(f"Invalid batching parameters file '{path}': unknown field {key}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parameters_from_config(config: Mapping[str, object]) -> BatchingParameters:
    """Batching parameters from the app config: the file first, then single knobs.

    Keys: ``ENABLE_BATCHING``, ``BATCHING_PARAMETERS_FILE``, ``MAX_BATCH_SIZE``,
    ``BATCH_TIMEOUT_MICROS``, ``NUM_BATCH_THREADS``, ``MAX_ENQUEUED_BATCHES``
    (None or absent: the file's value, else TF Serving's default).
    """
    knobs = {
        field: config.get(field.upper())
        for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                      "max_enqueued_batches")
    }
    knobs = {k: int(v) for k, v in knobs.items() if v is not None}
    enabled = bool(config.get("ENABLE_BATCHING", True))
    if config.get("BATCHING_PARAMETERS_FILE"):
        return BatchingParameters.from_file(
            config["BATCHING_PARAMETERS_FILE"], enabled=enabled, **knobs
        )
    return BatchingParameters(enabled=enabled, **knobs)


RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class _Task:
    """A waiting request: its inputs in, its outputs (or error) out."""

    __slots__ = ("arrays", "rows", "key", "enqueued", "wake", "outputs", "error", "batch")

    def __init__(self, arrays: dict[str, np.ndarray], rows: int) -> None:
        self.arrays = arrays
        self.rows = rows
        # Tasks merge when their inputs agree on dtype and all dimensions but the first.
        self.key = tuple((alias, a.dtype.str, a.shape[1:]) for alias, a in arrays.items())
        self.enqueued = time.perf_counter()
        # Held until released once: the outputs are ready, or a run slot was handed over.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.outputs: list[np.ndarray] | None = None
        self.error: BaseException | None = None
        self.batch: list[_Task] | None = None  # the batch to run, when handed a slot


class _Queue:
    """The waiting requests of one signature, and the slots to run them."""

    def __init__(self, model: str, params: BatchingParameters, metrics: BatchMetrics) -> None:
        self._model = model
        self._params = params
        self._metrics = metrics
        self._timeout = params.batch_timeout_micros / 1e6
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pending: collections.deque[_Task] = collections.deque()
        self._pending_rows = 0
        self._free_slots = params.num_batch_threads
        self._capacity = params.max_enqueued_batches * params.max_batch_size

    def run(
        self,
        arrays: dict[str, np.ndarray],
        rows: int,
        run_fn: RunFn,
        arriving: Callable[[], int],
    ) -> list[np.ndarray]:
        with self._lock:
            if self._free_slots and not self._pending and not (self._timeout and arriving()):
                self._free_slots -= 1
                task = None  # nothing to wait for or merge with: run at once
            else:
                if self._pending_rows + rows > self._capacity:
                    raise Unavailable(
                        "The batch scheduling queue to which this task was submitted is full"
                    )
                task = _Task(arrays, rows)
                lead = self._free_slots > 0
                if lead:  # a leader is never queued, so no other batch can take it
                    self._free_slots -= 1
                else:
                    self._pending.append(task)
                    self._pending_rows += rows
                    if self._timeout:
                        self._arrived.notify()
        if task is None:
            try:
                outputs = run_fn(arrays)
            finally:
                self._release_slot()
            self._metrics.record(self._model, (0.0,), rows, 0)
            return outputs
        if lead:
            batch = self._take(task, arriving)
        else:
            task.wake.acquire()
            batch = task.batch
        if batch is not None:
            try:
                self._run_batch(batch, run_fn)
            finally:
                self._release_slot()
                for other in batch:
                    if other is not task:
                        other.wake.release()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _take(self, first: _Task, arriving: Callable[[], int]) -> list[_Task]:
        """Removes ``first`` and the compatible tasks queued behind it, up to the size cap."""
        with self._lock:
            if self._timeout:
                deadline = first.enqueued + self._timeout
                while (first.rows + self._pending_rows < self._params.max_batch_size
                       and arriving() > 0):
                    left = deadline - time.perf_counter()
                    if left <= 0 or not self._arrived.wait(left):
                        break
            return self._take_locked(first)

    def _take_locked(self, first: _Task) -> list[_Task]:
        """``first`` (not queued) and the queued tasks that can join it, in arrival order."""
        batch, rows, kept = [first], first.rows, collections.deque()
        while self._pending:
            task = self._pending.popleft()
            if task.key == first.key and rows + task.rows <= self._params.max_batch_size:
                batch.append(task)
                rows += task.rows
                self._pending_rows -= task.rows
            else:
                kept.append(task)
        self._pending = kept
        return batch

    def _release_slot(self) -> None:
        """Hands the slot to the oldest waiting request, with the batch it heads; or frees it."""
        with self._lock:
            if not self._pending:
                self._free_slots += 1
                return
            head = self._pending.popleft()
            self._pending_rows -= head.rows
            head.batch = self._take_locked(head)
        head.wake.release()

    def _run_batch(self, batch: list[_Task], run_fn: RunFn) -> None:
        started = time.perf_counter()
        waits = [(started - task.enqueued) * 1e6 for task in batch]
        rows = sum(task.rows for task in batch)
        if len(batch) == 1:
            _run_alone(batch[0], run_fn)
            self._metrics.record(self._model, waits, rows, 0)
            return
        size = _padded_size(rows, self._params.allowed_batch_sizes)
        feeds = {
            alias: _concatenate([task.arrays[alias] for task in batch], size - rows)
            for alias in batch[0].arrays
        }
        try:
            outputs = run_fn(feeds)
            if any(np.ndim(out) == 0 or len(out) != size for out in outputs):
                raise _Unsplittable()
        except Exception:  # noqa: BLE001 - retried below, where each failure is reported
            # One by one, so each request gets its own answer or its own error.
            for task, wait in zip(batch, waits, strict=True):
                _run_alone(task, run_fn)
                self._metrics.record(self._model, (wait,), task.rows, 0)
            return
        self._metrics.record(self._model, waits, rows, size - rows)
        start = 0
        for task in batch:
            stop = start + task.rows
            task.outputs = [out[start:stop] for out in outputs]
            start = stop


class _Unsplittable(Exception):
    """A merged run returned outputs that cannot be cut back into requests."""


def _run_alone(task: _Task, run_fn: RunFn) -> None:
    try:
        task.outputs = run_fn(task.arrays)
    except Exception as exc:  # noqa: BLE001 - handed to the request's own thread
        task.error = exc


def _padded_size(rows: int, allowed: Sequence[int]) -> int:
    for size in allowed:
        if size >= rows:
            return size
    return rows


def _concatenate(parts: list[np.ndarray], padding: int) -> np.ndarray:
    if padding:
        parts = [*parts, np.repeat(parts[0][:1], padding, axis=0)]
    return np.concatenate(parts)


_UNCOUNTED = contextlib.nullcontext()


class Batcher:
    """Merges concurrent runs of the same model signature.

    Args:
        params: Batching knobs; ``params.enabled=False`` runs every request alone.
        metrics: Where batch sizes and queueing times go.

    Example:
        >>> import numpy as np
        >>> class Model: ...
        >>> batcher = Batcher(BatchingParameters(num_batch_threads=1))
        >>> double = lambda feeds: [feeds["x"] * 2]
        >>> batcher.run(Model(), "m", ("sig",), {"x": np.ones((2, 3))}, double)[0].shape
        (2, 3)
    """

    def __init__(
        self, params: BatchingParameters | None = None, metrics: BatchMetrics | None = None
    ) -> None:
        self.params = params or BatchingParameters()
        self.metrics = metrics or BatchMetrics()
        self._queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._batchable: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._arriving = 0
        self._counting = self.params.enabled and bool(self.params.batch_timeout_micros)

    def arriving(self) -> int:
        """Requests inside the server that have not reached their model run yet."""
        return self._arriving

    def arrival(self) -> contextlib.AbstractContextManager[None]:
        """Counts a request as on its way to a model run until it gets there (or fails).

        Only counted when ``batch_timeout_micros`` is set: a batch waits to fill
        only while such requests exist.
        """
        if not self._counting:
            return _UNCOUNTED
        return self._counted_arrival()

    @contextlib.contextmanager
    def _counted_arrival(self) -> Iterator[None]:
        with self._lock:
            self._arriving += 1
        self._local.arrived = True
        try:
            yield
        finally:
            self._depart()

    def _depart(self) -> None:
        if getattr(self._local, "arrived", False):
            self._local.arrived = False
            with self._lock:
                self._arriving -= 1

    def batchable(self, owner: object, signature_def: object, key: str) -> bool:
        """Whether every input and output of a signature has a leading ``-1`` dimension.

        Args:
            owner: The loaded model version; the answer is kept as long as it lives.
            signature_def: Its ``SignatureDef`` proto.
            key: The signature's name.
        """
        known = self._batchable.get(owner)
        if known is None:
            known = self._batchable.setdefault(owner, {})
        answer = known.get(key)
        if answer is None:
            infos = [*signature_def.inputs.values(), *signature_def.outputs.values()]
            answer = known[key] = all(
                not info.tensor_shape.unknown_rank
                and len(info.tensor_shape.dim) > 0
                and info.tensor_shape.dim[0].size == -1
                for info in infos
            )
        return answer

    def run(
        self,
        owner: object,
        model: str,
        queue_key: tuple,
        arrays: dict[str, np.ndarray],
        run_fn: RunFn,
        batchable: bool = True,
    ) -> list[np.ndarray]:
        """Runs ``run_fn(arrays)``, merged with concurrent calls that share ``queue_key``.

        Args:
            owner: What the queue belongs to (a loaded model version); queues go with it.
            model: Model name, for the metrics.
            queue_key: Calls with equal keys (signature, inputs, outputs) may merge.
            arrays: Input alias → array; the first dimension is the request's rows.
            run_fn: Runs the model on a dict like ``arrays``; returns one array per output.
            batchable: False when the signature has no batch dimension everywhere.

        Returns:
            ``run_fn``'s outputs for these rows only.

        Raises:
            Unavailable: The queue is full.
            ServingError: The model run failed.
        """
        queue = self.queue(owner, model, queue_key) if batchable and self.params.enabled else None
        return self.run_queued(queue, arrays, run_fn)

    def queue(self, owner: object, model: str, queue_key: tuple) -> _Queue:
        """The queue of calls sharing ``queue_key``; made on first use, dropped with ``owner``.

        A caller may keep it (per model version and signature) and pass it to
        ``run_queued``, sparing each request the look-ups.
        """
        queues = self._queues.get(owner)
        if queues is None:
            with self._lock:
                queues = self._queues.setdefault(owner, {})
        queue = queues.get(queue_key)
        if queue is None:
            with self._lock:
                queue = queues.setdefault(queue_key, _Queue(model, self.params, self.metrics))
        return queue

    def run_queued(
        self, queue: _Queue | None, arrays: dict[str, np.ndarray], run_fn: RunFn
    ) -> list[np.ndarray]:
        """``run`` on a queue from ``queue``; None runs alone (batching off, or not batchable)."""
        if self._counting:
            self._depart()
        if queue is None:
            return run_fn(arrays)
        rows = _rows(arrays)
        if rows is None or rows > self.params.max_batch_size:
            return run_fn(arrays)
        return queue.run(arrays, rows, run_fn, self.arriving)


def _rows(arrays: dict[str, np.ndarray]) -> int | None:
    """The shared first dimension of the inputs, or None if they cannot merge."""
    rows = None
    for array in arrays.values():
        if array.ndim == 0 or (rows is not None and array.shape[0] != rows):
            return None
        rows = array.shape[0]
    return rows or None


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
