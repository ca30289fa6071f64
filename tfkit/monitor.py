"""What to log while training runs, and when: step scalars, histograms, update ratios.

The loop hands the monitor every call's totals. When due, it also inspects
the call's last step, which the compiled steps kept aside (the weights it
started from and its gradient; see steps.LastStep): weight and gradient
histograms and per-layer update ratios. Everything here runs between calls,
never inside the compiled step, and the writer builds and writes the events
on its own thread.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from tfkit import memory
from tfkit.steps import Steps, accumulate, summarize
from tfkit.summaries import RunWriter

# Inspections (copying weights and gradients to the host) may take this share of
# training time at most.
INSPECTION_BUDGET = 0.02


class Monitor:
    """Writes step-level summaries at intervals.

    Args:
        writer: the run's writer (a no-op on non-chief workers).
        steps: the compiled steps (model, optimizer, the kept last step).
        log_every_steps: scalars every this many steps.
        histogram_every_steps: weight/gradient histograms and update ratios
            every this many steps (0 turns them off), as the time budget
            allows, and at least once an epoch. They are taken at the end of
            a call, so at most once per call.
        steps_per_epoch: the epoch's length.
    """

    def __init__(
        self, writer: RunWriter, steps: Steps, *, log_every_steps: int,
        histogram_every_steps: int, steps_per_epoch: int,
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

    def _inspection_due(self, step: int) -> bool:
        """Due by the interval, and within the time budget or not yet done this epoch."""
        if self.steps.last_step is None or not self.histogram_every or not self.writer.enabled:
            return False
        if step < self._next_histogram:
            return False
        return (
            self._inspected_epoch < (step - 1) // self._steps_per_epoch
            or self._inspect_seconds <= INSPECTION_BUDGET * self._train_seconds
        )

    def _inspect(self, step: int) -> None:
        """Histograms and update ratios of the step that ended at `step`."""
        started = time.perf_counter()
        last = self.steps.last_step
        before, gradients = last.read()
        after = _values(self.steps.model.trainable_variables)
        names = last.names
        self.writer.histograms("train", step=step, values={
            **{f"weights/{n}": w for n, w in zip(names, after, strict=True)},
            **{f"gradients/{n}": g for n, g in zip(names, gradients, strict=True)},
        })
        # Computed on the writer's thread: for a large model the norms take a while.
        self.writer.scalars("train", step=step, values=lambda: {
            f"update_ratio/{layer}": ratio
            for layer, ratio in update_ratios(names, before, after).items()
        })
        self._next_histogram = step + self.histogram_every
        self._inspected_epoch = (step - 1) // self._steps_per_epoch
        self._inspect_seconds += time.perf_counter() - started

    def after_call(
        self, step: int, n: int, seconds: float, totals: dict[str, float], *,
        complete: bool = True,
    ) -> None:
        """Account one call of n steps ending at `step`; write scalars and inspect when due.

        A call cut short (`complete=False`, at a non-finite loss) did not keep
        its last step: nothing is inspected.
        """
        if complete and n and self._inspection_due(step):
            self._inspect(step)
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
