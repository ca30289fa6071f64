"""The weight update of a plain Keras Adam or SGD in fused TensorFlow kernels where they are faster.

Keras 3 writes Adam's update as about fifteen small ops per weight (the two
moment updates, the step), each a kernel launch and a pass over the weight's
memory. TensorFlow has the same arithmetic as one kernel per weight
(`ResourceApplyAdam`, `ResourceApplyKerasMomentum`). On a CPU the Adam
kernel splits every weight above a few hundred floats across all threads
(its cost estimate is the whole tensor's, given per element). Measured per
weight on 2 cores (benchmarks/update_kernels.py): 256 floats 7.5 µs fused vs
14 µs as separate ops (the kernel still runs inline), 4,096 floats 76 vs
32 µs (split, and the split costs more than it saves), 65,536 floats 198 vs
352 µs (the split pays). Larger weights keep Keras's arithmetic: the same
separate ops Keras's Adam writes, emitted here on each weight's handles
(`_adam_ops`).
Keras's own apply hands every weight to the strategy's `update`, which
converts Keras's update function with AutoGraph for each weight when
called from a converted function such as the training loop: about 50 ms of
tracing per weight on the CNN benchmark, for the same graph. With the CNN
benchmark's 200,704-float dense weight in the fused kernel, peak host
memory rose by about 58 MB (cause not found), past the 10 % allowance over
`model.fit`. So the Adam kernel takes the weights of at most
INLINE_MAX_SIZE elements (biases, small heads); the SGD kernels are plain
Eigen expressions, sized right, and take every weight.
The kernels update the Keras optimizer's own slot variables and step counter,
so checkpoints, resuming and `optimizer.variables` are as if Keras had
applied the step.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tfkit import _compat

INLINE_MAX_SIZE = 256  # elements; the fused Adam kernel runs on the calling thread up to here

Update = Callable[[Sequence[tf.Tensor], Sequence[tf.Tensor], Sequence[keras.Variable]], None]

# Options under which the Keras optimizer does more than its update rule.
_EXTRAS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor",
           "gradient_accumulation_steps")


def fused_update(optimizer: keras.optimizers.Optimizer,
                 strategy: tf.distribute.Strategy) -> Update | None:
    """`update(summed, shares, variables)` with fused kernels, or None where Keras must apply it.

    Fused: `keras.optimizers.Adam` without amsgrad, and `keras.optimizers.SGD`
    (any momentum, with or without Nesterov), with numeric hyperparameters
    (the learning rate may be a variable or a schedule), on a strategy whose
    variables have one local copy per replica. Anything more (weight decay,
    EMA, gradient accumulation, clipping or loss scaling inside the optimizer,
    weight constraints, a subclass such as AdamW, TPUs) returns None.

    The returned function takes the gradients summed over replicas (one
    replica's update then equals every other's, so mirrored copies stay the
    same) for the weights it updates itself, each replica's share for the
    others (Keras sums those itself), and increments `optimizer.iterations` once.

    Example:
        >>> update = fused_update(keras.optimizers.Adam(1e-3), tf.distribute.get_strategy())
        >>> update is not None
        True
    """
    if isinstance(strategy, tf.distribute.TPUStrategy) or any(
        getattr(optimizer, name, None) for name in _EXTRAS
    ) or getattr(optimizer, "use_ema", False):
        return None
    if type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad and _numbers(
        optimizer.beta_1, optimizer.beta_2, optimizer.epsilon
    ):
        return _Fused(optimizer, _adam, large=_adam_ops)
    if type(optimizer) is keras.optimizers.SGD and _numbers(optimizer.momentum):
        return _Fused(optimizer, _sgd)
    return None


def _numbers(*values: object) -> bool:
    return all(isinstance(v, numbers.Real) for v in values)


class _Fused:
    """Applies `kernel` to the weights it suits, `large` (the same update as separate ops)
    to the other plain weights, and Keras's own apply to the rest."""

    def __init__(self, optimizer: keras.optimizers.Optimizer, kernel: Callable, *,
                 large: Callable | None = None) -> None:
        self.optimizer, self.kernel, self.large = optimizer, kernel, large

    def plain(self, variable: keras.Variable) -> bool:
        """Whether the update is the optimizer's rule alone (no constraint, no overwrite)."""
        return variable.constraint is None and not variable.overwrite_with_gradient

    def fused(self, variable: keras.Variable) -> bool:
        """Whether this weight's update runs in the fused kernel."""
        size = variable.shape.num_elements() or 0
        return self.plain(variable) and (self.large is None or size <= INLINE_MAX_SIZE)

    def __call__(self, summed: Sequence[tf.Tensor], shares: Sequence[tf.Tensor],
                 variables: Sequence[keras.Variable]) -> None:
        opt = self.optimizer
        own, rest = [], []
        for gradient, share, variable in zip(summed, shares, variables, strict=True):
            if self.fused(variable):
                own.append((gradient, variable, self.kernel))
            elif self.large and self.plain(variable):
                own.append((gradient, variable, self.large))
            else:
                rest.append((share, variable))
        scalars: dict[tf.DType, dict[str, tf.Tensor]] = {}
        for gradient, variable, update in own:
            dtype = variable.dtype
            if dtype not in scalars:  # the same per-step scalars Keras computes per weight
                scalars[dtype] = {
                    "lr": tf.cast(opt.learning_rate, dtype),
                    "step": tf.cast(opt.iterations + 1, dtype),
                }
            slots = [s[_compat.variable_index(opt, variable)] for s in _slots(opt)]
            update(opt, variable, slots, tf.cast(gradient, dtype), scalars[dtype])
        if rest:  # after the kernels, which read the step count Keras's apply then increments
            opt.apply_gradients(rest)
        else:
            opt.iterations.assign_add(1)


def _slots(opt: keras.optimizers.Optimizer) -> list[list[keras.Variable]]:
    if isinstance(opt, keras.optimizers.Adam):
        return _compat.adam_slots(opt)
    return [opt.momentums] if opt.momentum else []


def _adam(opt, variable, slots, gradient, scalars) -> None:
    """Keras 3's Adam exactly: m += (g - m)(1 - β1); v += (g² - v)(1 - β2);
    w -= α m / (√v + ε) with α = lr √(1 - β2^t) / (1 - β1^t), ε outside the root."""
    dtype = gradient.dtype
    beta_1, beta_2 = tf.cast(opt.beta_1, dtype), tf.cast(opt.beta_2, dtype)
    m, v = slots
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.handle, v=v.handle,
        beta1_power=tf.pow(beta_1, scalars["step"]), beta2_power=tf.pow(beta_2, scalars["step"]),
        lr=scalars["lr"], beta1=beta_1, beta2=beta_2, epsilon=tf.cast(opt.epsilon, dtype),
        grad=gradient,
    )


def _adam_ops(opt, variable, slots, gradient, scalars) -> None:
    """Keras 3's `Adam.update_step` op for op, on the weight's and slots' own handles."""
    dtype = gradient.dtype
    m, v = slots
    beta_1_power = tf.pow(tf.cast(opt.beta_1, dtype), scalars["step"])
    beta_2_power = tf.pow(tf.cast(opt.beta_2, dtype), scalars["step"])
    alpha = scalars["lr"] * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    _assign_add(m, (gradient - _read(m, dtype)) * (1 - opt.beta_1))
    _assign_add(v, (tf.square(gradient) - _read(v, dtype)) * (1 - opt.beta_2))
    step = (_read(m, dtype) * alpha) / (tf.sqrt(_read(v, dtype)) + opt.epsilon)
    tf.raw_ops.AssignSubVariableOp(resource=variable.handle, value=step)


def _read(variable: keras.Variable, dtype: tf.DType) -> tf.Tensor:
    return tf.raw_ops.ReadVariableOp(resource=variable.handle, dtype=dtype)


def _assign_add(variable: keras.Variable, value: tf.Tensor) -> None:
    tf.raw_ops.AssignAddVariableOp(resource=variable.handle, value=value)


def _sgd(opt, variable, slots, gradient, scalars) -> None:
    """Keras 3's SGD: m = μ m - lr g; w += m (Nesterov: w += μ m - lr g); no momentum: w -= lr g."""
    if not slots:
        tf.raw_ops.ResourceApplyGradientDescent(
            var=variable.handle, alpha=scalars["lr"], delta=gradient
        )
        return
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=variable.handle, accum=slots[0].handle, lr=scalars["lr"], grad=gradient,
        momentum=tf.cast(opt.momentum, gradient.dtype), use_nesterov=opt.nesterov,
    )
