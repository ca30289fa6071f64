"""The optimizers tfkit trains with: the names it knows, and the global-norm clip across replicas.

Every optimizer a run uses goes through `for_training`, which gives it an
`apply` that sees the gradient summed over the replicas before the update:
the one place that gradient exists whole. There it is measured (the
`grad_norm` the run logs), clipped by its global norm when `clip_norm` is set
(Keras's own `clipnorm` would clip each replica's share), and kept for the
histograms when asked. The update itself is the optimizer's own: Keras's
apply, or a fused optimizer's `apply_summed` (tfkit/updates.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfkit import updates
from tfkit.config import OPTIMIZERS as NAMES  # declared there: the command line reads it without TF

SUM = tf.distribute.ReduceOp.SUM


def make(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name: adam, adamw, sgd (momentum 0.9) or rmsprop.

    Example:
        >>> type(make("sgd", 0.1)).__name__, float(make("sgd", 0.1).momentum)
        ('SGD', 0.9)
    """
    if name not in NAMES:
        raise ValueError(f"optimizer must be one of {', '.join(NAMES)}; got {name!r}")
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop}[name](learning_rate)


class Measure:
    """What the step leaves beside the optimizer: the last gradient's norm, and the gradient.

    Plain attributes, not tracked: none of it belongs in a checkpoint. `last`
    is set by the loop before each step (true on a call's last one): on one
    replica without clipping only that step pays for the norm and the copy.
    """

    def __init__(self, variables: Sequence[keras.Variable], *, replicas: int,
                 clip_norm: float | None, keep_gradients: bool) -> None:
        self.replicas, self.clip_norm = replicas, clip_norm
        self.every_step = clip_norm is not None or replicas > 1
        self.last = tf.Variable(True, trainable=False)
        # Every replica holds the same value: reading one, the first, is the value.
        on_read = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.grad_norm = tf.Variable(0.0, **on_read)
        self.gradients = [tf.Variable(tf.zeros(v.shape, v.dtype), **on_read)
                          for v in variables] if keep_gradients else []

    def record(self, total: list, loss_scale: tf.Tensor) -> tf.Tensor:
        """Store the gradient's norm (and the gradient, when kept); returns the norm."""
        norm = tf.cast(tf.linalg.global_norm(total), tf.float32) / tf.cast(loss_scale, tf.float32)
        writes = [self.grad_norm.assign(norm)]
        if self.gradients and self.every_step:  # measured at every step, kept at the last
            writes.append(tf.cond(self.last, lambda: self._keep(total), lambda: tf.constant(True)))
        elif self.gradients:  # this is the last step already
            writes.append(self._keep(total))
        with tf.control_dependencies(writes):
            return tf.identity(norm)

    def _keep(self, total: list) -> tf.Tensor:
        with tf.control_dependencies([kept.assign(g) for kept, g in zip(self.gradients, total,
                                                                       strict=True)]):
            return tf.constant(True)


class _GlobalNorm:
    """Mixed into an optimizer's class by `for_training`: see the module's docstring."""

    tfkit_measure: Measure

    def apply(self, grads, trainable_variables=None):
        variables = list(trainable_variables)
        measure = self.tfkit_measure
        shares = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                  for g, v in zip(grads, variables, strict=True)]
        total = shares
        if measure.replicas > 1:  # each replica holds a share; the norm is the sum's
            total = tf.distribute.get_replica_context().all_reduce(SUM, shares)
        loss_scale = self.scale_loss(1.0)
        # Clipping needs the norm at every step; several replicas sum at every step anyway
        # (an all-reduce may not sit inside a condition), so there the norm costs little.
        if measure.every_step:
            norm = measure.record(total, loss_scale)
        else:
            norm = tf.cond(measure.last, lambda: measure.record(total, loss_scale),
                           lambda: tf.constant(0.0))
        if measure.clip_norm is not None:
            scale = tf.minimum(1.0, measure.clip_norm / (norm + 1e-12))
            total, shares = [g * scale for g in total], [g * scale for g in shares]
        if isinstance(self, updates.SummedUpdate):
            return self.apply_summed(total, variables)
        return super().apply(shares, variables)  # Keras sums the shares itself


@functools.cache
def _with_global_norm(cls: type) -> type:
    return type(cls.__name__, (_GlobalNorm, cls), {"__module__": cls.__module__})


def for_training(optimizer: keras.optimizers.Optimizer, *, strategy: tf.distribute.Strategy,
                 variables: Sequence[keras.Variable], clip_norm: float | None = None,
                 keep_gradients: bool = False, fused: bool = True
                 ) -> keras.optimizers.Optimizer:
    """The optimizer a run trains with, built on `variables`; call in `strategy.scope()`.

    Args:
        optimizer: a fresh Keras optimizer, made for this run (its class is
            extended in place: tfkit made it, nobody else holds it).
        strategy: the run's strategy.
        variables: the model's trainable variables.
        clip_norm: clip by the global norm of the gradient summed over replicas.
        keep_gradients: keep the last step's gradient (for histograms).
        fused: a plain Adam or SGD becomes its fused twin (tfkit/updates.py).

    Returns:
        An optimizer with `tfkit_measure` (a `Measure`) beside it.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> opt = for_training(make("adam", 1e-3), strategy=tf.distribute.get_strategy(),
        ...                    variables=model.trainable_variables)
        >>> type(opt).__name__, opt.built
        ('FusedAdam', True)
    """
    variables = list(variables)
    if fused:
        optimizer = updates.fused(optimizer, strategy, variables) or optimizer
    optimizer.__class__ = _with_global_norm(type(optimizer))
    optimizer.tfkit_measure = Measure(
        variables, replicas=strategy.num_replicas_in_sync, clip_norm=clip_norm,
        keep_gradients=keep_gradients)
    optimizer.build(variables)  # before the first traced step
    return optimizer
