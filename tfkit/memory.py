"""Where the memory goes: an estimate before training, measurements during it."""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkit.config import OPTIMIZER_SLOTS


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to train one model at one batch size.

    Attributes:
        parameters: every weight of the model (trainable or not).
        gradients: one gradient per trainable weight.
        optimizer_state: the optimizer's slots (Adam keeps two per weight).
        activations: layer outputs of one batch, kept for the backward pass.
        workspace: temporaries of the update: element-wise optimizer math
            materializes about two copies of the weight being updated, so two
            copies of the largest weight (measured: see benchmarks/RESULTS.md).
        available: bytes the device has (host RAM on a CPU), or None.
    """

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    workspace: int
    batch_size: int
    available: int | None = None

    @property
    def total(self) -> int:
        return self.fixed + self.activations

    @property
    def fixed(self) -> int:
        """Bytes that do not depend on the batch size."""
        return self.parameters + self.gradients + self.optimizer_state + self.workspace

    def largest(self) -> str:
        parts = {
            "parameters": self.parameters, "gradients": self.gradients,
            "optimizer_state": self.optimizer_state, "activations": self.activations,
        }
        return max(parts, key=parts.get)

    def batch_size_that_fits(self, budget: int | None = None) -> int:
        """The largest batch whose activations fit beside the fixed costs (0: none fits)."""
        budget = budget if budget is not None else self.available
        if budget is None:
            return self.batch_size
        fixed = self.fixed
        per_example = self.activations / max(self.batch_size, 1)
        if per_example == 0:
            return self.batch_size if fixed <= budget else 0
        return max(0, int((budget - fixed) // per_example))

    def describe(self) -> str:
        line = (
            f"memory estimate at batch {self.batch_size}: {_mb(self.total)} = "
            f"parameters {_mb(self.parameters)} + gradients {_mb(self.gradients)} + "
            f"optimizer state {_mb(self.optimizer_state)} + update workspace "
            f"{_mb(self.workspace)} + activations {_mb(self.activations)}"
        )
        if self.available:
            line += f"; the device has {_mb(self.available)} ({self.total / self.available:.1%})"
        return line


def estimate_memory(
    model: keras.Model, batch_size: int, optimizer: str | keras.optimizers.Optimizer = "adam",
    sequence_length: int | None = None,
) -> MemoryEstimate:
    """Estimate the bytes training `model` needs at `batch_size`.

    Parameters, gradients and optimizer state are counted exactly from the
    variables; activations are the sum of every layer's output size for one
    batch (what the backward pass keeps) and the update workspace two copies of
    the largest weight: both estimates. TensorFlow's own runtime (a few tens
    of MB) is not counted.

    Args:
        model: a built Keras model.
        batch_size: examples per step on one device.
        optimizer: name ("adam", "adamw", "sgd", "rmsprop") or a Keras optimizer.
        sequence_length: the length of an unknown time dimension (a text
            model's inputs [N, None]); None counts such a dimension as 1.

    Returns:
        A MemoryEstimate, with the host's RAM (or the GPU's memory) as `available`.

    Example:
        >>> m = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4)])
        >>> estimate_memory(m, 32, "sgd").parameters
        176
    """
    name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__.lower()
    params = sum(_nbytes(v) for v in model.weights)
    trainable = sum(_nbytes(v) for v in model.trainable_weights)
    largest = max((_nbytes(v) for v in model.trainable_weights), default=0)
    activations = batch_size * sum(
        _layer_output_bytes(layer, sequence_length or 1) for layer in model.layers
    )
    return MemoryEstimate(
        parameters=params, gradients=trainable,
        optimizer_state=OPTIMIZER_SLOTS.get(name, 2) * trainable, activations=activations,
        workspace=2 * largest,
        batch_size=batch_size, available=device_memory_limit(),
    )


def device_memory_limit() -> int | None:
    """The GPU's memory when there is one, else the host's physical RAM."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        if details.get("memory_limit"):
            return int(details["memory_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def peak_host_bytes() -> int:
    """This process's peak resident memory so far (ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def current_host_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_memory() -> dict[str, int]:
    """Current and peak bytes on the first GPU ({} without one)."""
    if not tf.config.list_logical_devices("GPU"):
        return {}
    info = tf.config.experimental.get_memory_info("GPU:0")
    return {"current": int(info["current"]), "peak": int(info["peak"])}


class OutOfMemoryError(RuntimeError):
    """Training ran out of device memory; the message says what to change."""


def out_of_memory_message(estimate: MemoryEstimate, error: Exception) -> str:
    """A message naming the biggest part and a batch size that would fit."""
    fits = estimate.batch_size_that_fits()
    advice = (
        f"Try batch_size={fits} or smaller: it would fit the estimate" if fits
        else "No batch size fits: the weights, gradients and optimizer state alone are too "
        "big; use a smaller model, an optimizer with less state (sgd) or mixed precision"
    )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first_line = next((line for line in lines if "OOM" in line), lines[-1] if lines else "")
    return (
        f"out of memory while training: {first_line}. The largest part is "
        f"{estimate.largest().replace('_', ' ')}; {estimate.describe()}. {advice}."
    )


def _nbytes(variable: Any) -> int:
    return int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize


def _layer_output_bytes(layer: keras.layers.Layer, unknown: int = 1) -> int:
    """Bytes of one example's output of a layer (0 for inputs and layers without one)."""
    if isinstance(layer, keras.layers.InputLayer):
        return 0
    try:
        shapes = layer.output.shape if not isinstance(layer.output, (list, tuple)) else None
    except (AttributeError, ValueError):
        return 0
    if shapes is None:
        return sum(_shape_bytes(t.shape, t.dtype, unknown) for t in layer.output)
    return _shape_bytes(shapes, layer.output.dtype, unknown)


def _shape_bytes(shape: Any, dtype: Any, unknown: int = 1) -> int:
    size = int(np.prod([unknown if d is None else d for d in shape[1:]]))
    try:
        return size * np.dtype(dtype).itemsize
    except TypeError:  # strings and other non-numeric outputs hold no activations to keep
        return 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
