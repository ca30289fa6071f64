"""TensorBoard event writing: the only module that writes summaries."""

from __future__ import annotations

import itertools
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util

HISTOGRAM_BUCKETS = 30
FLUSH_SECONDS = 5.0  # written events reach the file this soon, for a TensorBoard watching live
QUEUE_ITEMS = 64  # a writer that falls behind slows training down rather than growing memory
_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata("", "")
_SCALAR_METADATA = scalar_metadata.create_summary_metadata("", "")
_TEXT_METADATA = text_metadata.create_summary_metadata("", "")
_SCALAR_SHAPE = tensor_shape_pb2.TensorShapeProto()
_FILE_NUMBERS = itertools.count()
_STOP = object()

Values = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class EventFile:
    """One TensorBoard event file, written by its own thread.

    `add` queues a function that makes the events and returns at once: the
    thread builds the protobufs and writes them, so the training thread pays
    for neither (one eager `tf.summary` op per value cost about half a
    millisecond each). The queue is bounded: a writer that falls behind
    blocks the caller. `flush` returns once everything queued before it is
    in the file; `close` flushes and stops the thread. An error on the
    thread (a full disk, a lost bucket) is raised by the next call.

    The records go through `tf.io.TFRecordWriter` (TensorFlow's C++ writer),
    in the file name and format `tf.summary` uses. TensorBoard's own
    `EventFileWriter` was measured in its place (benchmarks/RESULTS.md, "Cost
    of full TensorBoard logging"): it computes each record's CRC32C in
    Python, 34.5 ms of CPU against 1.1 ms to write one logged 5-epoch run's
    events, and on the benchmark MLP full logging then cost a median +8.4 %
    of training time end to end (paired runs, 5 rounds of 5, 10 epochs)
    against +0.3 % with this writer, over the 5 % the logging may cost.

    Example:
        >>> events = EventFile("/tmp/tb/demo")
        >>> events.add(lambda: [event_pb2.Event(step=1, summary=scalar_summary({"x": 1.0}))])
        >>> events.close()
    """

    def __init__(self, directory: str) -> None:
        tf.io.gfile.makedirs(directory)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_FILE_NUMBERS)}.v2")
        self.path = os.path.join(directory, name)
        self._records = tf.io.TFRecordWriter(self.path)
        self._queue: queue.Queue = queue.Queue(QUEUE_ITEMS)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tfkit-events", daemon=True)
        self._thread.start()
        now = time.time()
        self.add(lambda: [event_pb2.Event(wall_time=now, file_version="brain.Event:2")])

    def add(self, make_events: Callable[[], Iterable[event_pb2.Event]]) -> None:
        """Queue `make_events`, called on the writer thread; its events go to the file."""
        self._raise_error()
        if self._closed:
            raise ValueError(f"event file {self.path} is closed")
        self._queue.put(make_events)

    def flush(self) -> None:
        """Wait until everything queued so far is written and flushed to the file."""
        if not self._closed:
            done = threading.Event()
            self._queue.put(done)
            done.wait()
        self._raise_error()

    def close(self) -> None:
        """Write what is queued, close the file and stop the thread (again: a no-op)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        flush_at = None
        while True:
            timeout = None if flush_at is None else max(0.0, flush_at - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP or isinstance(item, threading.Event) or item is None:
                self._guarded(self._records.flush)
                flush_at = None
                if item is _STOP:
                    self._guarded(self._records.close, always=True)  # also after an error
                    return
                if item is not None:
                    item.set()
                continue
            self._guarded(lambda item=item: self._write(item))
            if flush_at is None:
                flush_at = time.monotonic() + FLUSH_SECONDS
            elif time.monotonic() >= flush_at:
                self._guarded(self._records.flush)
                flush_at = None

    def _write(self, make_events: Callable[[], Iterable[event_pb2.Event]]) -> None:
        for event in make_events():
            self._records.write(event.SerializeToString())

    def _guarded(self, work: Callable[[], Any], *, always: bool = False) -> None:
        """Run `work`, keeping its error for the caller; after one error, skip the rest
        unless `always`."""
        if self._error is not None and not always:
            return
        try:
            work()
        except Exception as error:  # handed to the training thread by its next call
            self._error = self._error or error


class RunWriter:
    """Writes one run's events under `<logdir>/<run>/{train,validation}`.

    Only the chief writes: other workers of a multi-worker run get a writer
    that does nothing, so they never clobber the chief's files. Writing
    happens on background threads (see EventFile); `close` (or leaving a
    `with` block, also on an exception) writes everything queued.

    Example:
        >>> with RunWriter("/tmp/tb", "demo") as writer:
        ...     writer.scalars("train", step=1, values={"loss": 0.5})
    """

    def __init__(self, logdir: str | None, run: str, *, chief: bool = True) -> None:
        self.enabled = bool(logdir) and chief
        self.path = os.path.join(logdir, run) if logdir else None
        self._files: dict[str, EventFile] = {}

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _events(self, split: str) -> EventFile:
        if split not in self._files:
            self._files[split] = EventFile(os.path.join(self.path, split))
        return self._files[split]

    def _add(self, split: str, step: int, make_summary: Callable[[], summary_pb2.Summary]) -> None:
        events = self._events(split)
        now = time.time()  # when it happened, not when the thread gets to it
        events.add(lambda: [event_pb2.Event(wall_time=now, step=step, summary=make_summary())])

    def scalars(self, split: str, *, step: int, values: Values) -> None:
        """Scalars under `split` ("train" or "validation") at `step`.

        `values` may be a function returning them, to compute them off the
        training thread.
        """
        if self.enabled:
            frozen = values if callable(values) else dict(values)
            self._add(split, step, lambda: scalar_summary(_call(frozen)))

    def text(self, split: str, name: str, body: str, *, step: int = 0) -> None:
        """A text summary (Markdown) for the Text tab."""
        if self.enabled:
            self._add(split, step, lambda: _summary(name, _TEXT_METADATA, tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING, tensor_shape=_SCALAR_SHAPE,
                string_val=[body.encode("utf-8")],
            )))

    def histograms(self, split: str, *, step: int, values: Values) -> None:
        """One histogram per named array (weights, gradients).

        The buckets are counted with numpy on the writer thread and written in
        the histogram plugin's format: `tf.summary.histogram` runs several
        eager ops per tensor, about ten times slower for the same picture.
        """
        if self.enabled:
            frozen = values if callable(values) else dict(values)
            self._add(split, step, lambda: summary_pb2.Summary(value=[
                _value(name, _HISTOGRAM_METADATA, tensor_util.make_tensor_proto(_buckets(array)))
                for name, array in _call(frozen).items()
            ]))

    def hparams(self, hparams: dict[str, Any]) -> None:
        """The run's configuration for the HParams tab; its metrics are the epoch scalars."""
        if self.enabled:
            clean = {k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))}
            trial = os.path.basename(self.path)
            self._add("", 0, lambda: hp.hparams_pb(clean, trial_id=trial))

    def graph(self, graph: tf.Graph) -> None:
        """The graph of an already traced function (the training call), for the Graphs tab.

        Taken from the trace that ran anyway, rather than tracing again
        under `tf.summary.trace_on`.
        """
        if self.enabled:
            graph_def = graph.as_graph_def()
            now = time.time()
            self._events("train").add(lambda: [
                event_pb2.Event(wall_time=now, graph_def=graph_def.SerializeToString())
            ])

    def start_profile(self) -> None:
        """A profiler trace of the next calls, viewable in TensorBoard's Profile tab."""
        if self.enabled:
            tf.profiler.experimental.start(os.path.join(self.path, "train"))

    def stop_profile(self) -> None:
        if self.enabled:
            tf.profiler.experimental.stop()

    def config(self, config: dict) -> None:
        """The run's configuration as a text summary (a Markdown code block)."""
        if self.enabled:
            self.text("train", "config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def model_summary(self, model: Any) -> None:
        """Keras's layer table for the model, as text."""
        if not self.enabled:
            return
        lines: list[str] = []
        model.summary(print_fn=lambda line, **_: lines.append(line))
        self.text("train", "model_summary", "```\n" + "\n".join(lines) + "\n```")

    def flush(self) -> None:
        """Wait until every event written so far is in its file."""
        for events in self._files.values():
            events.flush()

    def close(self) -> None:
        """Write everything queued and close the files; raises the first writing error."""
        files, self._files = list(self._files.values()), {}
        error = None
        for events in files:
            try:
                events.close()
            except Exception as err:  # close the other files before raising
                error = error or err
        if error is not None:
            raise error


def scalar_summary(values: Mapping[str, Any]) -> summary_pb2.Summary:
    """A Summary of float32 scalars, as `tf.summary.scalar` writes them."""
    return summary_pb2.Summary(value=[
        _value(name, _SCALAR_METADATA, tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape=_SCALAR_SHAPE, float_val=[float(value)],
        ))
        for name, value in values.items()
    ])


def _summary(tag: str, metadata: Any, tensor: tensor_pb2.TensorProto) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[_value(tag, metadata, tensor)])


def _value(tag: str, metadata: Any, tensor: tensor_pb2.TensorProto) -> summary_pb2.Summary.Value:
    return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


def _call(values: Values) -> Mapping[str, Any]:
    return values() if callable(values) else values


def _buckets(value: np.ndarray) -> np.ndarray:
    """[buckets, 3] rows of (left edge, right edge, count), as the histogram plugin reads."""
    data = np.asarray(value, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros((HISTOGRAM_BUCKETS, 3))
    counts, edges = np.histogram(data, bins=HISTOGRAM_BUCKETS)
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
