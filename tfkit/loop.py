"""The outer loop: epochs, calls of several steps, evaluation, callbacks, history."""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from typing import Any

import keras
import tensorflow as tf

from tfkit.steps import Steps, summarize
from tfkit.summaries import RunWriter

log = logging.getLogger(__name__)

TARGET_SECONDS_PER_CALL = 0.5  # long enough to hide Python overhead, short enough for progress
MAX_STEPS_PER_CALL = 1000


class StepsPerCall:
    """How many steps the next `tf.function` call runs.

    Fixed when the user sets `steps_per_execution`; otherwise measured: after
    the first (tracing) call, sized so one call takes about half a second.
    """

    def __init__(self, fixed: int | None, steps_per_epoch: int) -> None:
        self.fixed = fixed
        self.current = fixed or min(steps_per_epoch, 8)
        self._calls = 0

    def update(self, steps: int, seconds: float) -> None:
        self._calls += 1
        if self.fixed or self._calls == 1 or seconds <= 0:
            return  # the first call includes tracing: not a measure of a step
        per_step = seconds / steps
        self.current = int(min(MAX_STEPS_PER_CALL, max(1, TARGET_SECONDS_PER_CALL / per_step)))


def run(
    *,
    steps: Steps,
    train_iterator: Any,
    validation: Any | None,
    steps_per_epoch: int,
    epochs: int,
    first_epoch: int = 0,
    steps_per_execution: int | None = None,
    callbacks: keras.callbacks.CallbackList,
    writer: RunWriter,
    verbose: bool | None = None,
) -> dict[str, list[float]]:
    """Train for the given epochs; returns the Keras-style history."""
    verbose = sys.stdout.isatty() if verbose is None else verbose
    sizer = StepsPerCall(steps_per_execution, steps_per_epoch)
    history: dict[str, list[float]] = defaultdict(list)
    model = steps.model
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(first_epoch, epochs):
        callbacks.on_epoch_begin(epoch)
        started = time.perf_counter()
        logs = _train_epoch(
            steps, train_iterator, steps_per_epoch, sizer, callbacks, verbose, epoch, epochs
        )
        seconds = time.perf_counter() - started
        logs["samples_per_second"] = steps_per_epoch * steps.global_batch_size / seconds
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(steps.optimizer.learning_rate))
        global_step = (epoch + 1) * steps_per_epoch
        writer.scalars("train", step=global_step, values={f"epoch_{k}": v for k, v in logs.items()})
        if validation is not None:
            val_logs = summarize(steps.evaluate(validation))
            epoch_values = {f"epoch_{k}": v for k, v in val_logs.items()}
            writer.scalars("validation", step=global_step, values=epoch_values)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        for key, value in logs.items():
            history[key].append(value)
        callbacks.on_epoch_end(epoch, logs)
        _report_epoch(epoch, epochs, logs, seconds, verbose)
        if model.stop_training:
            log.info("stopped early after epoch %d", epoch + 1)
            break
    callbacks.on_train_end(logs={k: v[-1] for k, v in history.items()})
    writer.flush()
    return dict(history)


def _train_epoch(steps, iterator, steps_per_epoch, sizer, callbacks, verbose, epoch, epochs):
    bar = keras.utils.Progbar(steps_per_epoch, verbose=1) if verbose else None
    if bar is not None:
        print(f"Epoch {epoch + 1}/{epochs}")
    totals: dict[str, float] = defaultdict(float)
    done = 0
    while done < steps_per_epoch:
        n = min(sizer.current, steps_per_epoch - done)
        callbacks.on_train_batch_begin(done)
        started = time.perf_counter()
        out = steps.train(iterator, tf.constant(n))
        out = {k: float(v) for k, v in out.items()}  # the one host sync per call
        sizer.update(n, time.perf_counter() - started)
        for key, value in out.items():
            totals[key] = value if key == "grad_norm" else totals[key] + value
        done += n
        running = summarize(totals)
        callbacks.on_train_batch_end(done - 1, running)
        if bar is not None:
            bar.update(done, values=list(running.items()), finalize=False)
    return summarize(totals)


def _report_epoch(epoch, epochs, logs, seconds, verbose):
    shown = " - ".join(
        f"{k}: {v:.4g}" for k, v in logs.items() if k not in ("learning_rate", "samples_per_second")
    )
    line = f"epoch {epoch + 1}/{epochs} - {seconds:.1f}s - {shown}"
    if verbose:
        print(line)
    else:
        log.info(line)
