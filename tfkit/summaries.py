"""TensorBoard event writing: the only module that writes summaries."""

from __future__ import annotations

import json
import os

import tensorflow as tf


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

    def config(self, config: dict) -> None:
        """The run's configuration as a text summary (a Markdown code block)."""
        self.text("train", "config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
