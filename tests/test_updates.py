"""Fused Adam and SGD: Keras's optimizers with fused kernels, the same weights and state."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_options import PLAIN, train

from tfkit.options import StepOptions
from tfkit.updates import INLINE_MAX_SIZE, FusedAdam, FusedSGD, fused

FUSED = StepOptions(**{**vars(PLAIN), "fused_update": True, "keep_gradients": True})


def test_kept_gradient_is_the_last_steps_on_either_path():
    fast, _, _ = train("cpu:2", FUSED)
    slow, _, _ = train("cpu:2", StepOptions(**{**vars(FUSED), "fused_update": False}))
    assert type(fast.optimizer).__name__ == "FusedAdam"
    for got, want in zip(fast.kept_gradients, slow.kept_gradients, strict=True):
        assert np.abs(want.numpy()).sum() > 0
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.AdamW(1e-3),
    lambda: keras.optimizers.Adam(1e-3, amsgrad=True),
    lambda: keras.optimizers.Adam(1e-3, clipnorm=1.0),
    lambda: keras.optimizers.Adam(1e-3, use_ema=True),
    lambda: keras.optimizers.Adam(1e-3, gradient_accumulation_steps=2),
    lambda: keras.optimizers.RMSprop(1e-3),
    lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)),
])
def test_anything_beyond_the_plain_update_is_left_to_keras(make):
    assert fused(make(), tf.distribute.get_strategy(), []) is None


def test_plain_adam_and_sgd_get_their_fused_twins_with_the_same_settings():
    adam = fused(keras.optimizers.Adam(0.01, beta_2=0.99), tf.distribute.get_strategy(), [])
    sgd = fused(keras.optimizers.SGD(0.1, momentum=0.5, nesterov=True),
                tf.distribute.get_strategy(), [])
    assert isinstance(adam, FusedAdam) and adam.beta_2 == 0.99
    assert isinstance(sgd, FusedSGD) and sgd.momentum == 0.5 and sgd.nesterov


@pytest.mark.parametrize("size, in_kernel", [
    (1, True), (INLINE_MAX_SIZE, True), (INLINE_MAX_SIZE + 1, False), (200_704, False),
])
def test_adam_kernel_takes_the_weights_it_is_faster_for(size, in_kernel, monkeypatch):
    calls = []
    kernel = tf.raw_ops.ResourceApplyAdam
    monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam",
                        lambda **kw: calls.append(1) or kernel(**kw))
    weight = keras.Variable(np.ones(size, np.float32))
    optimizer = FusedAdam(1e-3)
    optimizer.build([weight])
    optimizer.apply_summed([tf.ones(size)], [weight])
    assert bool(calls) is in_kernel
    # Either way, Keras's Adam's first step: every weight moves by lr.
    np.testing.assert_allclose(weight.numpy(), np.ones(size) - 1e-3, rtol=1e-5)


def test_plain_adam_leaves_no_weight_to_keras_apply(monkeypatch):
    """Keras's apply converts its update with AutoGraph per weight: slow to trace."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("Keras's apply was called")

    monkeypatch.setattr(keras.optimizers.Adam, "apply", refuse)
    _, _, loss = train("cpu", FUSED)
    assert np.isfinite(loss)
