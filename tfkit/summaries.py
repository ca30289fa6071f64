"""TensorBoard event writing: the only module that writes summaries."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hp

HISTOGRAM_BUCKETS = 30
_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata("", "")


class RunWriter:
    """Writes one run's events under `<logdir>/<run>/{train,validation}`.

    Only the chief writes: other workers of a multi-worker run get a writer
    that does nothing, so they never clobber the chief's files.

    Example:
        >>> writer = RunWriter("/tmp/tb", "demo")
        >>> writer.scalars("train", step=1, values={"loss": 0.5})
        >>> writer.close()
    """

    def __init__(self, logdir: str | None, run: str, *, chief: bool = True) -> None:
        self.enabled = bool(logdir) and chief
        self.path = os.path.join(logdir, run) if logdir else None
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, split: str) -> tf.summary.SummaryWriter:
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(os.path.join(self.path, split))
        return self._writers[split]

    def scalars(self, split: str, *, step: int, values: dict[str, float]) -> None:
        """Scalars under `split` ("train" or "validation") at `step`."""
        if not self.enabled:
            return
        with self._writer(split).as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def text(self, split: str, name: str, body: str, *, step: int = 0) -> None:
        if not self.enabled:
            return
        with self._writer(split).as_default(step=step):
            tf.summary.text(name, body)

    def histograms(self, split: str, *, step: int, values: dict[str, np.ndarray]) -> None:
        """One histogram per named array (weights, gradients).

        The buckets are counted with numpy and written in the histogram
        plugin's format: `tf.summary.histogram` runs several eager ops per
        tensor, about ten times slower for the same picture.
        """
        if not self.enabled:
            return
        with self._writer(split).as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, _buckets(value), metadata=_HISTOGRAM_METADATA)

    def hparams(self, hparams: dict[str, Any]) -> None:
        """The run's configuration for the HParams tab; its metrics are the epoch scalars."""
        if not self.enabled:
            return
        clean = {k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))}
        with self._writer("").as_default(step=0):
            hp.hparams(clean, trial_id=os.path.basename(self.path))

    def start_graph_trace(self) -> None:
        """Record the graph of the next traced call (the first training call)."""
        if self.enabled:
            tf.summary.trace_on(graph=True, profiler=False)

    def end_graph_trace(self) -> None:
        if self.enabled:
            with self._writer("train").as_default(step=0):
                tf.summary.trace_export("step_graph", step=0)

    def start_profile(self) -> None:
        """A profiler trace of the next calls, viewable in TensorBoard's Profile tab."""
        if self.enabled:
            tf.profiler.experimental.start(os.path.join(self.path, "train"))

    def stop_profile(self) -> None:
        if self.enabled:
            tf.profiler.experimental.stop()

    def config(self, config: dict) -> None:
        """The run's configuration as a text summary (a Markdown code block)."""
        self.text("train", "config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def model_summary(self, model: Any) -> None:
        """Keras's layer table for the model, as text."""
        lines: list[str] = []
        model.summary(print_fn=lambda line, **_: lines.append(line))
        self.text("train", "model_summary", "```\n" + "\n".join(lines) + "\n```")

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _buckets(value: np.ndarray) -> np.ndarray:
    """[buckets, 3] rows of (left edge, right edge, count), as the histogram plugin reads."""
    data = np.asarray(value, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros((HISTOGRAM_BUCKETS, 3))
    counts, edges = np.histogram(data, bins=HISTOGRAM_BUCKETS)
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
