"""What to log while training runs, and when: step scalars, histograms, update ratios.

A Keras callback. Before a call it decides whether the call should be an
inspection (one step whose gradient is kept, with the weights read before and
after it); after every call it accounts the call's totals. Everything here
runs between calls, never inside the compiled step.
"""

from __future__ import annotations

import collections
import time

import keras
import numpy as np

from tfkit import memory
from tfkit.state import TrainState
from tfkit.steps import Steps, accumulate, summarize
from tfkit.summaries import RunWriter

# Inspections (a one-step call, weight copies) may take this share of training time at most.
INSPECTION_BUDGET = 0.02
PROFILED_CALLS = 3


class Monitor(keras.callbacks.Callback):
    """Writes the run's TensorBoard summaries: step scalars, histograms, epoch scalars.

    Args:
        writer: the run's writer (a no-op on non-chief workers).
        steps: the compiled steps (model, optimizer, the traced graph).
        state: the run's state; an inspection lowers its `call_steps` to 1.
        log_every_steps: scalars every this many steps.
        histogram_every_steps: weight/gradient histograms and update ratios
            every this many steps (0 turns them off), as the time budget
            allows, and at least once an epoch.
        steps_per_epoch: the epoch's length.
        synchronized: several workers run this loop in lockstep. Their calls
            must line up (a collective matches its peers call by call), so
            inspections then follow the step interval alone, on every worker,
            and only the chief's writer writes.
        profile: trace calls 2 to 1 + PROFILED_CALLS for TensorBoard's Profile tab.
    """

    def __init__(
        self, writer: RunWriter, steps: Steps, state: TrainState, *, log_every_steps: int,
        histogram_every_steps: int, steps_per_epoch: int, synchronized: bool = False,
        profile: bool = False,
    ) -> None:
        super().__init__()
        self.writer, self.steps, self.state = writer, steps, state
        self.log_every = log_every_steps
        self.histogram_every = histogram_every_steps
        self._pending: dict[str, float] = {}
        self._pending_steps = 0
        self._pending_seconds = 0.0
        self._last_logged = state.step
        self._next_histogram = 0
        self._inspect_seconds = 0.0
        self._train_seconds = 0.0
        self._steps_per_epoch = steps_per_epoch
        self._inspected_epoch = -1
        self._synchronized = synchronized
        self._profile, self._profiling, self._calls = profile, False, 0
        self._before: list[np.ndarray] | None = None  # the weights before an inspection
        self._started = 0.0

    def wants_inspection(self, step: int) -> bool:
        """Due by the interval, and within the time budget or not yet done this epoch."""
        if not (self.steps.options.keep_gradients and self.histogram_every):
            return False
        if step < self._next_histogram:
            return False
        if self._synchronized:
            return True
        return self.writer.enabled and (
            self._inspected_epoch < step // self._steps_per_epoch
            or self._inspect_seconds <= INSPECTION_BUDGET * self._train_seconds
        )

    def on_train_batch_begin(self, batch, logs=None):
        if self._profile and self._calls == 1:
            self.writer.start_profile()
            self._profiling = True
        if self.wants_inspection(self.state.step):
            # One ordinary step, measured inside out: the weights before and after it.
            self._started = time.perf_counter()
            self.state.call_steps = 1
            self._before = _values(self.steps.model.trainable_variables)

    def on_train_batch_end(self, batch, logs=None):
        call, step = self.state.call, self.state.step
        if self._calls == 0 and self.writer.enabled:
            self.writer.graph(self.steps.traced_graph())
        self._calls += 1
        if self._before is not None:
            self._write_inspection(step)
        self._after_call(step, call.ran, call.seconds, call.totals)
        if self._profiling and self._calls > PROFILED_CALLS:
            self._stop_profile()

    def _write_inspection(self, step: int) -> None:
        """Histograms and update ratios of the step just run; all of its time counts
        against the budget, the step's included: it cut the call before it short."""
        variables = self.steps.model.trainable_variables
        before, after = self._before, _values(variables)
        names = [v.path for v in variables]
        self.writer.histograms("train", step=step, values={
            **{f"weights/{n}": w for n, w in zip(names, after, strict=True)},
            **{f"gradients/{n}": g.numpy()
               for n, g in zip(names, self.steps.kept_gradients, strict=True)},
        })
        # Computed on the writer's thread: for a large model the norms take a while.
        self.writer.scalars("train", step=step, values=lambda: {
            f"update_ratio/{layer}": ratio
            for layer, ratio in update_ratios(names, before, after).items()
        })
        self._next_histogram = step - 1 + self.histogram_every
        self._inspected_epoch = (step - 1) // self._steps_per_epoch
        self._inspect_seconds += time.perf_counter() - self._started
        self._before = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.writer.scalars("train", step=self.state.step, values={
            f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_")})
        validation = {f"epoch_{k[4:]}": v for k, v in logs.items() if k.startswith("val_")}
        if validation:
            self.writer.scalars("validation", step=self.state.step, values=validation)

    def on_train_end(self, logs=None):
        self.on_train_abort()

    def on_train_abort(self) -> None:
        self._stop_profile()
        self.writer.flush()

    def _stop_profile(self) -> None:
        if self._profiling:
            self.writer.stop_profile()
            self._profiling = False

    def _after_call(self, step: int, n: int, seconds: float, totals: dict[str, float]) -> None:
        """Account one call of n steps ending at `step`; write scalars when due."""
        accumulate(self._pending, totals)
        self._pending_steps += n
        self._pending_seconds += seconds
        self._train_seconds += seconds
        if step - self._last_logged < self.log_every or not self.writer.enabled:
            return
        values = summarize(self._pending)
        values["learning_rate"] = self.steps.learning_rate()
        values["samples_per_second"] = (
            self._pending_steps * self.steps.global_batch_size / max(self._pending_seconds, 1e-9)
        )
        values["step_time_ms"] = 1000 * self._pending_seconds / max(self._pending_steps, 1)
        values["memory/host_peak_mb"] = memory.peak_host_bytes() / 2**20
        for key, value in memory.device_memory().items():
            values[f"memory/device_{key}_mb"] = value / 2**20
        self.writer.scalars("train", step=step, values=values)
        self._pending.clear()
        self._pending_steps, self._pending_seconds = 0, 0.0
        self._last_logged = step


def _values(variables: list) -> list[np.ndarray]:
    # Through the backend variable: Keras's own Variable.numpy() converts
    # through several layers, about four times slower.
    return [v.value.numpy() for v in variables]


def update_ratios(
    names: list[str], before: list[np.ndarray], after: list[np.ndarray]
) -> dict[str, float]:
    """‖Δw‖ / ‖w‖ per layer: how much one step moved the layer's weights.

    Around 1e-3 is healthy; far above, the learning rate is too high; far
    below, the layer barely learns.

    Example:
        >>> update_ratios(["d/kernel"], [np.ones(4)], [np.ones(4) * 1.001])
        {'d': 0.001...}
    """
    moved: dict[str, float] = collections.defaultdict(float)
    size: dict[str, float] = collections.defaultdict(float)
    for name, old, new in zip(names, before, after, strict=True):
        layer = name.rsplit("/", 1)[0]
        moved[layer] += float(np.sum((new - old) ** 2))
        size[layer] += float(np.sum(old**2))
    return {layer: (moved[layer] / size[layer]) ** 0.5 if size[layer] else 0.0 for layer in moved}
