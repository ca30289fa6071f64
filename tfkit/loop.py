"""The outer loop: epochs, calls of several steps, evaluation, callbacks, history."""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from typing import Any

import keras
import tensorflow as tf

from tfkit.monitor import Monitor
from tfkit.steps import Steps, summarize
from tfkit.summaries import RunWriter

log = logging.getLogger(__name__)

TARGET_SECONDS_PER_CALL = 0.5  # long enough to hide Python overhead, short enough for progress
MAX_STEPS_PER_CALL = 1000
PROFILED_CALLS = 3


class StepsPerCall:
    """How many steps the next `tf.function` call runs.

    Fixed when the user sets `steps_per_execution`; otherwise measured from
    ordinary calls (not the first, which traces), sized so one call takes about
    half a second.
    """

    def __init__(self, fixed: int | None, steps_per_epoch: int) -> None:
        self.fixed = fixed
        self.current = fixed or min(steps_per_epoch, 8)

    def update(self, steps: int, seconds: float) -> None:
        if self.fixed or seconds <= 0:
            return
        per_step = seconds / steps
        self.current = int(min(MAX_STEPS_PER_CALL, max(1, TARGET_SECONDS_PER_CALL / per_step)))


class _Calls:
    """Runs training calls; traces the first one's graph and profiles a few on request."""

    def __init__(self, steps: Steps, iterator: Any, monitor: Monitor, writer: RunWriter,
                 profile: bool) -> None:
        self.steps, self.iterator, self.monitor, self.writer = steps, iterator, monitor, writer
        self.profile = profile
        self.count = 0
        self.profiling = False

    def run(self, n: int, step: int, sizer: StepsPerCall) -> tuple[dict[str, float], int]:
        """One call starting at global `step`; returns (totals, steps run)."""
        first = self.count == 0
        if first:
            self.writer.start_graph_trace()
        if self.profile and self.count == 1:
            self.writer.start_profile()
            self.profiling = True
        if self.monitor.wants_inspection(step):
            out, n, seconds = self.monitor.inspect(self.iterator, step), 1, 0.0
        else:
            started = time.perf_counter()
            out, _ = self.steps.train(self.iterator, tf.constant(n))
            out = {k: float(v) for k, v in out.items()}  # the one host sync per call
            seconds = time.perf_counter() - started
            self.monitor.after_call(step + n, n, seconds, out)
        if first:
            self.writer.end_graph_trace()
        elif seconds:
            sizer.update(n, seconds)  # the first call traces: no measure of a step
        self.count += 1
        if self.profiling and self.count > PROFILED_CALLS:
            self.finish()
        return out, n

    def finish(self) -> None:
        if self.profiling:
            self.writer.stop_profile()
            self.profiling = False


def run(
    *,
    steps: Steps,
    train_iterator: Any,
    validation: Any | None,
    steps_per_epoch: int,
    epochs: int,
    monitor: Monitor,
    callbacks: keras.callbacks.CallbackList,
    writer: RunWriter,
    first_epoch: int = 0,
    steps_per_execution: int | None = None,
    profile: bool = False,
    verbose: bool | None = None,
) -> dict[str, list[float]]:
    """Train for the given epochs; returns the Keras-style history."""
    verbose = sys.stdout.isatty() if verbose is None else verbose
    sizer = StepsPerCall(steps_per_execution, steps_per_epoch)
    calls = _Calls(steps, train_iterator, monitor, writer, profile)
    history: dict[str, list[float]] = defaultdict(list)
    steps.model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(first_epoch, epochs):
        callbacks.on_epoch_begin(epoch)
        started = time.perf_counter()
        logs = _train_epoch(calls, epoch, steps_per_epoch, sizer, callbacks, verbose, epochs)
        seconds = time.perf_counter() - started
        logs["samples_per_second"] = steps_per_epoch * steps.global_batch_size / seconds
        logs["learning_rate"] = steps.learning_rate()
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
        if steps.model.stop_training:
            log.info("stopped early after epoch %d", epoch + 1)
            break
    calls.finish()
    callbacks.on_train_end(logs={k: v[-1] for k, v in history.items()})
    writer.flush()
    return dict(history)


def _train_epoch(calls, epoch, steps_per_epoch, sizer, callbacks, verbose, epochs):
    bar = keras.utils.Progbar(steps_per_epoch, verbose=1) if verbose else None
    if bar is not None:
        print(f"Epoch {epoch + 1}/{epochs}")
    totals: dict[str, float] = defaultdict(float)
    done = 0
    while done < steps_per_epoch:
        callbacks.on_train_batch_begin(done)
        n = min(sizer.current, steps_per_epoch - done)
        out, n = calls.run(n, epoch * steps_per_epoch + done, sizer)
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
