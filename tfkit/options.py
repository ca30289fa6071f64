"""Speed-ups applied around the reference step, each with a switch (as Orbit's trainer options).

The plain path is `steps.train_step` called once per batch from an input
iterator, with Keras's own update. Each option below changes how that step
is driven or fed, never what it computes: tests/test_options.py holds every
one to the plain path's weights within 1e-6, and benchmarks/RESULTS.md says
what each buys.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfkit import data as data_lib
from tfkit import distribute

TARGET_SECONDS_PER_CALL = 0.5  # long enough to hide Python overhead, short enough for progress
MAX_STEPS_PER_CALL = 1000


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """How the reference step is driven; every field is a switch, on where it pays.

    Example:
        >>> StepOptions(steps_per_call=1, fused_update=False).in_memory_input
        True
    """

    steps_per_call: int | None = None  # many steps per tf.function call; None: ~0.5 s a call
    in_memory_input: bool = True  # CPU devices: gather batches inside the compiled loop
    keep_gradients: bool = False  # keep the last step's gradient, for the histograms
    fused_update: bool = True  # a plain Adam or SGD updates in fused kernels (FusedAdam)
    jit_compile: bool = False  # XLA; measured slower on a CPU for small models


def compiled(replica_step: Callable, jit_compile: bool) -> Callable:
    """The replica step as it runs: as is, or compiled with XLA."""
    return tf.function(replica_step, jit_compile=True) if jit_compile else replica_step


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


def train_iterator(prepared: data_lib.PreparedData, *, strategy: tf.distribute.Strategy,
                   global_batch: int, seed: int, epochs: int, start_step: int,
                   in_memory_input: bool = True) -> Any:
    """The training batches from `start_step` on, for the strategy's replicas.

    With `in_memory_input` and the rows in memory, on CPU devices, the
    batches are gathered inside the compiled loop (`data.GatheredBatches`),
    batch for batch the same as the input stream's.
    """
    spec, tensors = prepared.spec, prepared.train_tensors
    in_memory = None if tensors is None or not in_memory_input else functools.partial(
        data_lib.GatheredBatches, tensors, n_train=spec.n_train,
        global_batch_size=global_batch, seed=seed, start_step=start_step,
    )
    return distribute.iterate(data_lib.train_input_fn(
        prepared.train, n_train=spec.n_train, global_batch_size=global_batch,
        seed=seed, epochs=epochs, start_step=start_step, tensors=tensors,
    ), strategy, in_memory)
