"""What to log while training runs, and when: step scalars, histograms, update ratios.

The loop asks the monitor before each call whether this call should be an
inspection (one step that also returns the gradient, with the weights read
before and after it) and hands it every call's totals afterwards. Everything
here runs between calls, never inside the compiled step.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
import tensorflow as tf

from tfkit import memory
from tfkit.steps import Steps, accumulate, summarize
from tfkit.summaries import RunWriter

# Inspections (a one-step call, weight copies) may take this share of training time at most.
INSPECTION_BUDGET = 0.02


class Monitor:
    """Writes step-level summaries at intervals.

    Args:
        writer: the run's writer (a no-op on non-chief workers).
        steps: the compiled steps (model, optimizer, inspect call).
        log_every_steps: scalars every this many steps.
        histogram_every_steps: weight/gradient histograms and update ratios
            every this many steps (0 turns them off), as the time budget
            allows, and at least once an epoch.
        steps_per_epoch: the epoch's length.
        synchronized: several workers run this loop in lockstep. Their calls
            must line up (a collective matches its peers call by call), so
            inspections then follow the step interval alone, on every worker,
            and only the chief's writer writes.
    """

    def __init__(
        self, writer: RunWriter, steps: Steps, *, log_every_steps: int,
        histogram_every_steps: int, steps_per_epoch: int, synchronized: bool = False,
    ) -> None:
        self.writer, self.steps = writer, steps
        self.log_every = log_every_steps
        self.histogram_every = histogram_every_steps
        self._pending: dict[str, float] = {}
        self._pending_steps = 0
        self._pending_seconds = 0.0
        self._last_logged = 0
        self._next_histogram = 0
        self._inspect_seconds = 0.0
        self._train_seconds = 0.0
        self._steps_per_epoch = steps_per_epoch
        self._inspected_epoch = -1
        self._synchronized = synchronized

    def wants_inspection(self, step: int) -> bool:
        """Due by the interval, and within the time budget or not yet done this epoch."""
        if not (self.steps.keep_gradients and self.histogram_every):
            return False
        if step < self._next_histogram:
            return False
        if self._synchronized:
            return True
        return self.writer.enabled and (
            self._inspected_epoch < step // self._steps_per_epoch
            or self._inspect_seconds <= INSPECTION_BUDGET * self._train_seconds
        )

    def inspect(self, iterator: Any, step: int) -> dict[str, float]:
        """Run one ordinary training step, measured inside out; returns its totals.

        All of its time counts against the budget, the step's included: it
        is one more call, and it cut the call before it short.
        """
        started = time.perf_counter()
        variables = self.steps.model.trainable_variables
        before = _values(variables)
        call_started = time.perf_counter()
        out, gradients = self.steps.train(iterator, tf.constant(1))
        totals = {k: float(v) for k, v in out.items()}
        seconds = time.perf_counter() - call_started
        after = _values(variables)
        names = [v.path for v in variables]
        self.writer.histograms("train", step=step + 1, values={
            **{f"weights/{n}": w for n, w in zip(names, after, strict=True)},
            **{f"gradients/{n}": g.numpy() for n, g in zip(names, gradients, strict=True)},
        })
        # Computed on the writer's thread: for a large model the norms take a while.
        self.writer.scalars("train", step=step + 1, values=lambda: {
            f"update_ratio/{layer}": ratio
            for layer, ratio in update_ratios(names, before, after).items()
        })
        self._next_histogram = step + self.histogram_every
        self._inspected_epoch = step // self._steps_per_epoch
        self._inspect_seconds += time.perf_counter() - started
        self.after_call(step + 1, 1, seconds, totals)
        return totals

    def after_call(self, step: int, n: int, seconds: float, totals: dict[str, float]) -> None:
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
