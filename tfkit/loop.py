"""The outer loop: epochs, calls of several steps, evaluation, checkpoints, history.

The compiled steps (steps.py) do the learning; this loop decides when to
log, evaluate, checkpoint and stop, in the manner of Orbit's controller.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections import defaultdict
from typing import Any

import keras
import tensorflow as tf

from tfkit.checkpoints import Checkpointer, NonFiniteLossError
from tfkit.interrupts import StopRequests, TrainingInterrupted
from tfkit.monitor import Monitor
from tfkit.steps import Steps, accumulate, summarize
from tfkit.summaries import RunWriter

log = logging.getLogger(__name__)

TARGET_SECONDS_PER_CALL = 0.5  # long enough to hide Python overhead, short enough for progress
MAX_STEPS_PER_CALL = 1000
PROFILED_CALLS = 3


@dataclasses.dataclass
class Position:
    """Where training stands: the global step and what the current epoch has summed."""

    step: int = 0
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    epoch_totals: dict[str, float] = dataclasses.field(default_factory=dict)
    last_loss: float | None = None  # the last finite per-step loss seen

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "epoch_totals": self.epoch_totals,
                "last_loss": self.last_loss}


@dataclasses.dataclass
class Hooks:
    """The parts of a run the loop drives besides the steps."""

    monitor: Monitor
    callbacks: keras.callbacks.CallbackList
    writer: RunWriter
    checkpointer: Checkpointer | None = None
    stop: StopRequests | None = None


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
    """Runs training calls; logs the first one's graph and profiles a few on request."""

    def __init__(self, steps: Steps, iterator: Any, monitor: Monitor, writer: RunWriter,
                 profile: bool) -> None:
        self.steps, self.iterator, self.monitor, self.writer = steps, iterator, monitor, writer
        self.profile = profile
        self.count = 0
        self.profiling = False

    def run(self, n: int, step: int, sizer: StepsPerCall) -> tuple[dict[str, float], int]:
        """One call of up to n steps at global `step`; returns (totals, steps attempted).

        A call runs fewer steps than attempted only when a loss was not finite.
        """
        first = self.count == 0
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
            self.monitor.after_call(step + int(out["steps"]), int(out["steps"]), seconds, out)
        if first and self.writer.enabled:
            self.writer.graph(self.steps.traced_graph(self.iterator))
        elif not first and seconds and out["steps"]:
            sizer.update(int(out["steps"]), seconds)  # the first call traces: no measure
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
    iterator: Any,
    validation: Any | None,
    steps_per_epoch: int,
    epochs: int,
    position: Position,
    hooks: Hooks,
    steps_per_execution: int | None = None,
    profile: bool = False,
    verbose: bool | None = None,
) -> dict[str, list[float]]:
    """Train from `position` to the end of `epochs`; returns the Keras-style history.

    Raises:
        NonFiniteLossError: a step's loss was NaN or infinite.
        TrainingInterrupted: SIGTERM/SIGINT arrived; a checkpoint was saved.
    """
    verbose = sys.stdout.isatty() if verbose is None else verbose
    sizer = StepsPerCall(steps_per_execution, steps_per_epoch)
    calls = _Calls(steps, iterator, hooks.monitor, hooks.writer, profile)
    steps.model.stop_training = False
    if hooks.checkpointer and position.step == 0:
        hooks.checkpointer.save_initial()  # a finite start to roll back to
    hooks.callbacks.on_train_begin()
    try:
        for epoch in range(position.step // steps_per_epoch, epochs):
            hooks.callbacks.on_epoch_begin(epoch)
            started = time.perf_counter()
            first_step = position.step
            _train_epoch(calls, epoch, steps_per_epoch, sizer, position, hooks, verbose, epochs)
            seconds = time.perf_counter() - started
            logs = summarize(position.epoch_totals)
            logs["samples_per_second"] = (
                (position.step - first_step) * steps.global_batch_size / seconds
            )
            logs["learning_rate"] = steps.learning_rate()
            _end_epoch(steps, validation, position, hooks, epoch, logs)
            _report_epoch(epoch, epochs, logs, seconds, verbose)
            if hooks.checkpointer and (hooks.checkpointer.due(position.step)
                                       or epoch == epochs - 1 or steps.model.stop_training):
                hooks.checkpointer.save(position.step, position.state())
            if steps.model.stop_training:
                log.info("stopped early after epoch %d", epoch + 1)
                break
    finally:
        calls.finish()
        hooks.writer.flush()
    hooks.callbacks.on_train_end(logs={k: v[-1] for k, v in position.history.items()})
    return dict(position.history)


def _train_epoch(calls, epoch, steps_per_epoch, sizer, position, hooks, verbose, epochs):
    bar = keras.utils.Progbar(steps_per_epoch, verbose=1) if verbose else None
    if bar is not None:
        print(f"Epoch {epoch + 1}/{epochs}")
    end = (epoch + 1) * steps_per_epoch
    while position.step < end:
        done = position.step - epoch * steps_per_epoch
        hooks.callbacks.on_train_batch_begin(done)
        n = min(sizer.current, end - position.step)
        out, n = calls.run(n, position.step, sizer)
        ran = int(out["steps"])
        position.step += ran
        if ran:
            position.last_loss = out["last_loss"]
            accumulate(position.epoch_totals, out)
        if ran < n:
            raise NonFiniteLossError(
                f"the loss became NaN or infinite at step {position.step + 1} "
                f"(epoch {epoch + 1}, step {position.step - epoch * steps_per_epoch + 1} of "
                f"{steps_per_epoch}); the last finite loss was {position.last_loss}. Lower the "
                "learning rate, clip gradients (clip_norm=1.0), or check the data for extreme "
                "values; checkpoints hold only finite weights"
            )
        running = summarize(position.epoch_totals)
        hooks.callbacks.on_train_batch_end(position.step - epoch * steps_per_epoch - 1, running)
        if bar is not None:
            bar.update(position.step - epoch * steps_per_epoch, values=list(running.items()),
                       finalize=False)
        _maybe_checkpoint_or_stop(position, hooks, end)


def _maybe_checkpoint_or_stop(position: Position, hooks: Hooks, epoch_end: int) -> None:
    ckpt = hooks.checkpointer
    stop = hooks.stop.requested if hooks.stop else None
    if ckpt and (stop or (position.step < epoch_end and ckpt.due(position.step))):
        ckpt.save(position.step, position.state())
    if stop:
        saved = f"checkpoint saved at step {position.step}" if ckpt else "no checkpoint folder"
        raise TrainingInterrupted(f"stopped by signal {stop}: {saved}; re-run to resume", stop)


def _end_epoch(steps, validation, position, hooks, epoch, logs) -> None:
    global_step = position.step
    hooks.writer.scalars("train", step=global_step,
                         values={f"epoch_{k}": v for k, v in logs.items()})
    if validation is not None:
        val_logs = summarize(steps.evaluate(validation))
        hooks.writer.scalars("validation", step=global_step,
                             values={f"epoch_{k}": v for k, v in val_logs.items()})
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
    history = defaultdict(list, position.history)
    for key, value in logs.items():
        history[key].append(value)
    position.history = dict(history)
    position.epoch_totals = {}
    hooks.callbacks.on_epoch_end(epoch, logs)


def _report_epoch(epoch, epochs, logs, seconds, verbose):
    shown = " - ".join(
        f"{k}: {v:.4g}" for k, v in logs.items() if k not in ("learning_rate", "samples_per_second")
    )
    line = f"epoch {epoch + 1}/{epochs} - {seconds:.1f}s - {shown}"
    if verbose:
        print(line)
    else:
        log.info(line)
