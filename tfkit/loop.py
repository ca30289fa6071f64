"""The outer loop: epochs of compiled calls, evaluation, and the callbacks between them.

The compiled steps (steps.py) do the learning; this loop only drives them and
tells the callbacks (tfkit/callbacks/, monitor.py, the user's), in the manner
of Orbit's controller and Keras's `fit`: the callbacks decide what to log,
save, print and when to stop.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import tensorflow as tf

from tfkit.options import StepsPerCall
from tfkit.state import Call, TrainState
from tfkit.steps import Steps, accumulate, summarize


def run(
    *,
    steps: Steps,
    iterator: Any,
    validation: Any | None,
    state: TrainState,
    callbacks: keras.callbacks.CallbackList,
    epochs: int,
    steps_per_epoch: int,
    steps_per_call: int | None = None,
) -> dict[str, list[float]]:
    """Train from `state.step` to the end of `epochs`; returns the Keras-style history.

    `state.history` and `state.stats` grow by one entry per epoch. Each call
    runs `steps_per_call` steps (None: sized to about half a second), fewer
    when a callback lowers `state.call_steps` in `on_train_batch_begin`.

    Raises:
        Whatever a callback raises: NonFiniteLossError (NanGuard),
        TrainingInterrupted (CheckpointSaver), ...
    """
    sizer = StepsPerCall(steps_per_call, steps_per_epoch)
    steps.model.stop_training = False
    calls = 0
    callbacks.on_train_begin()
    try:
        for epoch in range(state.step // steps_per_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            started, first_step = time.perf_counter(), state.step
            end = (epoch + 1) * steps_per_epoch
            while state.step < end:
                planned = state.call_steps = min(sizer.current, end - state.step)
                callbacks.on_train_batch_begin(state.step - epoch * steps_per_epoch)
                _call(steps, iterator, state)
                if calls and state.call.tried == planned and state.call.ran:
                    sizer.update(state.call.ran, state.call.seconds)  # the first call traces
                calls += 1
                callbacks.on_train_batch_end(state.step - epoch * steps_per_epoch - 1,
                                             summarize(state.epoch_totals))
            logs = summarize(state.epoch_totals)
            logs["samples_per_second"] = (state.step - first_step) * steps.global_batch_size / (
                time.perf_counter() - started)
            logs["learning_rate"] = steps.learning_rate()
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in summarize(
                    steps.evaluate(validation)).items()})
            state.end_epoch(logs)
            callbacks.on_epoch_end(epoch, state.last_epoch())
            if steps.model.stop_training:
                break
    except BaseException:
        for callback in callbacks.callbacks:
            getattr(callback, "on_train_abort", lambda: None)()
        raise
    callbacks.on_train_end(logs=state.last_epoch())
    return dict(state.history)


def _call(steps: Steps, iterator: Any, state: TrainState) -> None:
    """One compiled call of `state.call_steps` steps; the state advances by the steps run."""
    tried = state.call_steps
    started = time.perf_counter()
    out, _ = steps.train(iterator, tf.constant(tried))
    totals = {k: float(v) for k, v in out.items()}  # the one host sync per call
    state.call = Call(tried=tried, ran=int(totals["steps"]), totals=totals,
                      seconds=time.perf_counter() - started)
    state.step += state.call.ran
    if state.call.ran:
        state.last_loss = totals["last_loss"]
        accumulate(state.epoch_totals, totals)
