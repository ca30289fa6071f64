"""Fused Adam and SGD: Keras optimizers whose `update_step` runs TensorFlow's fused kernels.

Keras 3 writes Adam's update as about fifteen small ops per weight (the two
moment updates, the step), each a kernel launch and a pass over the weight's
memory. TensorFlow has the same arithmetic as one kernel per weight
(`ResourceApplyAdam`, `ResourceApplyKerasMomentum`). On a CPU the Adam
kernel splits every weight above a few hundred floats across all threads
(its cost estimate is the whole tensor's, given per element). Measured per
weight on 2 cores (benchmarks/update_kernels.py): 256 floats 7.5 µs fused vs
14 µs as separate ops (the kernel still runs inline), 4,096 floats 76 vs
32 µs (split, and the split costs more than it saves), 65,536 floats 198 vs
352 µs (the split pays). So the Adam kernel takes the weights of at most
INLINE_MAX_SIZE elements (biases, small heads); larger weights get Keras's
own arithmetic, the same separate ops Keras's Adam writes. With the CNN
benchmark's 200,704-float dense weight in the kernel, peak host memory also
rose by about 58 MB (cause not found); with small weights only, the CNN's
peak was 823 MB fused against 818 MB with Keras's update (RESULTS.md, run 8).
The SGD kernels are plain Eigen expressions, sized right, and take every weight.

`apply_summed` is the fast path tfkit's step takes (tfkit/optimizers.py):
Keras's own apply hands every weight to the strategy's `update`, which
converts the update function with AutoGraph for each weight when called from
a converted function such as the training loop (about 50 ms of tracing per
weight on the CNN benchmark, for the same graph). The kernels write the
Keras optimizer's own slot variables and step counter, so checkpoints,
resuming and `optimizer.variables` are as if Keras had applied the step.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfkit import _compat

INLINE_MAX_SIZE = 256  # elements; the fused Adam kernel runs on the calling thread up to here

# Options under which the Keras optimizer does more than its update rule.
_EXTRAS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor",
           "gradient_accumulation_steps")


class SummedUpdate:
    """What FusedAdam and FusedSGD share: the update of gradients already summed over replicas."""

    def apply_summed(self, gradients: Sequence[tf.Tensor],
                     variables: Sequence[keras.Variable]) -> None:
        """One step for every weight, from gradients summed over the replicas.

        Every replica applies the same sum to its own copy, so mirrored copies
        stay equal with no cross-replica update; the step counter moves once.
        """
        scalars: dict[tf.DType, dict[str, tf.Tensor]] = {}
        for gradient, variable in zip(gradients, variables, strict=True):
            dtype = variable.dtype
            if dtype not in scalars:  # the per-step scalars Keras computes per weight, once
                scalars[dtype] = {"lr": tf.cast(self.learning_rate, dtype),
                                  "step": tf.cast(self.iterations + 1, dtype)}
            self._fused_step(tf.cast(gradient, dtype), variable, scalars[dtype])
        self.iterations.assign_add(1)

    def update_step(self, gradient, variable, learning_rate):
        """Keras's entry point (its own apply): the same kernels."""
        dtype = variable.dtype
        self._fused_step(tf.cast(gradient, dtype), variable, {
            "lr": tf.cast(learning_rate, dtype), "step": tf.cast(self.iterations + 1, dtype)})

    def _slots(self, variable) -> list:
        index = _compat.variable_index(self, variable)
        return [slots[index] for slots in self._slot_lists()]


class FusedAdam(SummedUpdate, keras.optimizers.Adam):
    """Keras's Adam, updated by `ResourceApplyAdam` for small weights (exactly Keras's math).

    Example:
        >>> optimizer = FusedAdam(1e-3)
        >>> optimizer.learning_rate.numpy() == keras.optimizers.Adam(1e-3).learning_rate.numpy()
        True
    """

    def _slot_lists(self) -> list:
        return _compat.adam_slots(self)

    def _fused_step(self, gradient, variable, scalars) -> None:
        """m += (g - m)(1 - β1); v += (g² - v)(1 - β2); w -= α m / (√v + ε),
        α = lr √(1 - β2^t) / (1 - β1^t), ε outside the root: Keras 3's Adam."""
        dtype = gradient.dtype
        m, v = self._slots(variable)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        beta_1_power = tf.pow(beta_1, scalars["step"])
        beta_2_power = tf.pow(beta_2, scalars["step"])
        if (variable.shape.num_elements() or 0) <= INLINE_MAX_SIZE:
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=scalars["lr"], beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype), grad=gradient)
            return
        # Keras's ops, on the handles: a replica's own copy, with no cross-replica update.
        alpha = scalars["lr"] * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        _assign_add(m, (gradient - _read(m, dtype)) * (1 - self.beta_1))
        _assign_add(v, (tf.square(gradient) - _read(v, dtype)) * (1 - self.beta_2))
        step = (_read(m, dtype) * alpha) / (tf.sqrt(_read(v, dtype)) + self.epsilon)
        tf.raw_ops.AssignSubVariableOp(resource=variable.handle, value=step)


class FusedSGD(SummedUpdate, keras.optimizers.SGD):
    """Keras's SGD (any momentum, Nesterov or not) in one kernel per weight.

    Example:
        >>> FusedSGD(0.1, momentum=0.9).momentum
        0.9
    """

    def _slot_lists(self) -> list:
        return [self.momentums] if self.momentum else []

    def _fused_step(self, gradient, variable, scalars) -> None:
        """m = μ m - lr g; w += m (Nesterov: w += μ m - lr g); no momentum: w -= lr g."""
        if not self.momentum:
            tf.raw_ops.ResourceApplyGradientDescent(
                var=variable.handle, alpha=scalars["lr"], delta=gradient)
            return
        (accumulator,) = self._slots(variable)
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=accumulator.handle, lr=scalars["lr"], grad=gradient,
            momentum=tf.cast(self.momentum, gradient.dtype), use_nesterov=self.nesterov)


def fused(optimizer: keras.optimizers.Optimizer, strategy: tf.distribute.Strategy,
          variables: Sequence[keras.Variable]) -> keras.optimizers.Optimizer | None:
    """The fused twin of a plain Keras Adam or SGD (same settings), or None.

    Plain: exactly `keras.optimizers.Adam` without amsgrad or `SGD`, numeric
    hyperparameters (the learning rate may be a variable or a schedule), none of
    weight decay, EMA, gradient accumulation, clipping or loss scaling inside the
    optimizer, no weight with a constraint, and not on a TPU.

    Example:
        >>> fused(keras.optimizers.Adam(1e-3), tf.distribute.get_strategy(), []).__class__.__name__
        'FusedAdam'
    """
    if isinstance(strategy, tf.distribute.TPUStrategy) or any(
        getattr(optimizer, name, None) for name in _EXTRAS
    ) or getattr(optimizer, "use_ema", False) or any(
        v.constraint is not None or v.overwrite_with_gradient for v in variables
    ):
        return None
    config = optimizer.get_config()
    if type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad and _numbers(
        optimizer.beta_1, optimizer.beta_2, optimizer.epsilon
    ):
        return FusedAdam.from_config(config)
    if type(optimizer) is keras.optimizers.SGD and _numbers(optimizer.momentum):
        return FusedSGD.from_config(config)
    return None


def _numbers(*values: object) -> bool:
    return all(isinstance(v, numbers.Real) for v in values)


def _read(variable: keras.Variable, dtype: tf.DType) -> tf.Tensor:
    return tf.raw_ops.ReadVariableOp(resource=variable.handle, dtype=dtype)


def _assign_add(variable: keras.Variable, value: tf.Tensor) -> None:
    tf.raw_ops.AssignAddVariableOp(resource=variable.handle, value=value)
