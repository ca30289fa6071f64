"""The outer loop: epochs, calls of several steps, evaluation, checkpoints, history.

The compiled steps (steps.py) do the learning; this loop decides when to
log, evaluate, checkpoint and stop, in the manner of Orbit's controller.
Each epoch ends with one line on stdout (console.py decides whether and where
a progress bar goes).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import keras
import tensorflow as tf

from tfkit import console
from tfkit.checkpoints import Checkpointer, NonFiniteLossError
from tfkit.interrupts import StopRequests, TrainingInterrupted
from tfkit.monitor import Monitor
from tfkit.steps import Steps, accumulate, summarize
from tfkit.summaries import RunWriter

TARGET_SECONDS_PER_CALL = 0.5  # long enough to hide Python overhead, short enough for progress
MAX_STEPS_PER_CALL = 1000
PROFILED_CALLS = 3
# How training ran rather than what it learned: kept per epoch beside the history.
STATS = ("samples_per_second", "learning_rate", "grad_norm")


@dataclasses.dataclass
class Position:
    """Where training stands: the global step, the epochs so far, what this epoch has summed.

    `history` holds loss and metrics per epoch (`loss`, `accuracy`, `val_loss`,
    ...), as Keras's `History` does; `stats` holds the `STATS` per epoch.
    """

    step: int = 0
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    stats: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    epoch_totals: dict[str, float] = dataclasses.field(default_factory=dict)
    last_loss: float | None = None  # the last finite per-step loss seen

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the step (the checkpointer adds that)."""
        return {"history": self.history, "stats": self.stats,
                "epoch_totals": self.epoch_totals, "last_loss": self.last_loss}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        """The position a checkpoint's state (`state()` plus `step`) describes.

        Checkpoints saved before `stats` was kept apart hold the stats in the
        history; they move to `stats`.

        Example:
            >>> position = Position.from_state(
            ...     {"step": 8, "history": {"loss": [0.5], "grad_norm": [2.0]}})
            >>> position.history, position.stats
            ({'loss': [0.5]}, {'grad_norm': [2.0]})
        """
        history = dict(state.get("history") or {})
        stats = dict(state.get("stats") or {})
        for key in STATS:
            if key in history:
                stats.setdefault(key, history.pop(key))
        return cls(step=state.get("step", 0), history=history, stats=stats,
                   epoch_totals=dict(state.get("epoch_totals") or {}),
                   last_loss=state.get("last_loss"))


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
    verbose: int | None = None,
) -> dict[str, list[float]]:
    """Train from `position` to the end of `epochs`; returns the Keras-style history.

    `position.history` and `position.stats` grow by one entry per epoch.
    `verbose` is Keras's: 0 silent, 1 a progress bar on a terminal and a line
    per epoch, 2 a line per epoch; None: 1 on a terminal, else 2.

    Raises:
        NonFiniteLossError: a step's loss was NaN or infinite.
        TrainingInterrupted: SIGTERM/SIGINT arrived; a checkpoint was saved.
    """
    verbose = console.verbosity(verbose)
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
            with console.ProgressBar(steps_per_epoch, verbose) as bar:
                _train_epoch(calls, epoch, steps_per_epoch, sizer, position, hooks, bar)
            seconds = time.perf_counter() - started
            logs = summarize(position.epoch_totals)
            logs["samples_per_second"] = (
                (position.step - first_step) * steps.global_batch_size / seconds
            )
            logs["learning_rate"] = steps.learning_rate()
            _end_epoch(steps, validation, position, hooks, logs)
            console.say(epoch_line(epoch, epochs, seconds, position.history), verbose)
            hooks.callbacks.on_epoch_end(epoch, _last(position))
            if hooks.checkpointer and (hooks.checkpointer.due(position.step)
                                       or epoch == epochs - 1 or steps.model.stop_training):
                hooks.checkpointer.save(position.step, position.state())
            if steps.model.stop_training and epoch + 1 < epochs:
                console.say(f"stopped early after epoch {epoch + 1} of {epochs}", verbose)
                break
    finally:
        calls.finish()
        hooks.writer.flush()
    hooks.callbacks.on_train_end(logs=_last(position))
    return dict(position.history)


def _train_epoch(calls, epoch, steps_per_epoch, sizer, position, hooks, bar):
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
        bar.update(position.step - epoch * steps_per_epoch,
                   {k: v for k, v in running.items() if k not in STATS})
        _maybe_checkpoint_or_stop(position, hooks, end)


def _maybe_checkpoint_or_stop(position: Position, hooks: Hooks, epoch_end: int) -> None:
    ckpt = hooks.checkpointer
    stop = hooks.stop.requested if hooks.stop else None
    if ckpt and (stop or (position.step < epoch_end and ckpt.due(position.step))):
        ckpt.save(position.step, position.state())
    if stop:
        saved = f"checkpoint saved at step {position.step}" if ckpt else "no checkpoint folder"
        raise TrainingInterrupted(f"stopped by signal {stop}: {saved}; re-run to resume", stop)


def _end_epoch(steps, validation, position, hooks, logs) -> None:
    """Evaluate, write the epoch's scalars, and add the epoch to history and stats."""
    global_step = position.step
    hooks.writer.scalars("train", step=global_step,
                         values={f"epoch_{k}": v for k, v in logs.items()})
    metrics = {k: v for k, v in logs.items() if k not in STATS}
    if validation is not None:
        val_logs = summarize(steps.evaluate(validation))
        hooks.writer.scalars("validation", step=global_step,
                             values={f"epoch_{k}": v for k, v in val_logs.items()})
        metrics.update({f"val_{k}": v for k, v in val_logs.items()})
    _append(position.history, metrics)
    _append(position.stats, {k: v for k, v in logs.items() if k in STATS})
    position.epoch_totals = {}


def _append(per_epoch: dict[str, list[float]], values: dict[str, float]) -> None:
    for key, value in values.items():
        per_epoch.setdefault(key, []).append(value)


def _last(position: Position) -> dict[str, float]:
    """The last epoch's values for Keras callbacks: metrics, and the stats as well
    (Keras's own learning-rate callbacks add `learning_rate` to these logs too)."""
    return {k: v[-1] for k, v in {**position.history, **position.stats}.items() if v}


def epoch_line(epoch: int, epochs: int, seconds: float, history: dict[str, list[float]]) -> str:
    """One epoch's line: its number, its time, its loss and metrics.

    Example:
        >>> epoch_line(1, 20, 0.42, {"loss": [0.5, 0.31], "val_loss": [0.4, 0.29]})
        'epoch 2/20 - 0.4s - loss: 0.31 - val_loss: 0.29'
    """
    shown = " - ".join(f"{k}: {v[-1]:.4g}" for k, v in history.items() if v)
    return f"epoch {epoch + 1}/{epochs} - {seconds:.1f}s - {shown}"
