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

import collections
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from serving.batching_metrics import (  # noqa: F401 - the metric names: public here
    INPUT_BATCH_SIZE,
    PADDING_SIZE,
    PROCESSED_BATCH_SIZE,
    QUEUING_LATENCY,
    SIZE_BUCKETS,
    WRAPPED_RUN_COUNT,
    BatchMetrics,
)
from serving.batching_parameters import BatchingParameters, parameters_from_config  # noqa: F401
from serving.errors import ServingError


class Unavailable(ServingError):
    """The batch queue is full; the client should back off and retry."""

    code = "UNAVAILABLE"


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
        >>> queue = batcher.queue(Model(), "m", ("sig",))
        >>> batcher.run_queued(queue, {"x": np.ones((2, 3))}, double)[0].shape
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

    def queue(self, owner: object, model: str, queue_key: tuple) -> _Queue | None:
        """The queue of calls sharing ``queue_key``; made on first use, dropped with ``owner``.

        A caller may keep it (per model version and signature) and pass it to
        ``run_queued``, sparing each request the look-ups.

        Args:
            owner: What the queue belongs to (a loaded model version); queues go with it.
            model: Model name, for the metrics.
            queue_key: Calls with equal keys (signature, inputs, outputs) may merge.

        Returns:
            The queue; None when batching is off (every call then runs alone).
        """
        if not self.params.enabled:
            return None
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
        """Runs ``run_fn(arrays)``, merged with concurrent calls on the same queue.

        Args:
            queue: From ``queue``; None runs alone (batching off, or not batchable).
            arrays: Input alias → array; the first dimension is the request's rows.
            run_fn: Runs the model on a dict like ``arrays``; returns one array per output.

        Returns:
            ``run_fn``'s outputs for these rows only.

        Raises:
            Unavailable: The queue is full.
            ServingError: The model run failed.
        """
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
