"""Fused optimizer kernels give Keras's own weights and optimizer state."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkit import distribute
from tfkit.steps import Steps
from tfkit.updates import INLINE_MAX_SIZE, fused_update

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-3),
    "sgd": lambda: keras.optimizers.SGD(1e-3),
    "momentum": lambda: keras.optimizers.SGD(1e-3, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(1e-3, momentum=0.9, nesterov=True),
}


def _train(optimizer: str, strategy: str, fused: bool, steps: int = 6):
    """Weights Adam's kernel takes (8, 8x2, 2) and leaves to Keras's ops (256x256, 256x8)."""
    strategy = distribute.resolve(strategy)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64)
    with strategy.scope():
        model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        opt = OPTIMIZERS[optimizer]()
        opt.build(model.trainable_variables)
    compiled = Steps(model=model, optimizer=opt, task="multiclass", strategy=strategy,
                     global_batch_size=16, fused=fused, keep_gradients=True)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    totals, kept = compiled.train(iterator, tf.constant(steps))
    return compiled, [v.numpy() for v in model.weights + opt.variables], float(totals["loss"])


@pytest.mark.parametrize("strategy", ["cpu", "cpu:2"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_fused_update_matches_keras_apply(optimizer, strategy):
    """Same math; Adam turns last-bit differences into ~lr * 1e-4 where sqrt(v) is near epsilon."""
    fused, fused_values, fused_loss = _train(optimizer, strategy, fused=True)
    keras_steps, keras_values, keras_loss = _train(optimizer, strategy, fused=False)
    assert fused._fused is not None and keras_steps._fused is None
    sizes = [v.shape.num_elements() for v in fused.model.trainable_variables]
    in_kernel = [fused._fused.fused(v) for v in fused.model.trainable_variables]
    if optimizer == "adam":
        assert in_kernel == [size <= INLINE_MAX_SIZE for size in sizes]
        assert not all(in_kernel) and any(in_kernel)
    else:
        assert all(in_kernel)
    assert fused.optimizer.iterations.numpy() == 6  # counted once per step
    for got, want in zip(fused_values, keras_values, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert fused_loss == pytest.approx(keras_loss, rel=1e-5)


def test_kept_gradient_is_the_last_steps_on_either_path():
    fused, _, _ = _train("adam", "cpu:2", fused=True)
    plain, _, _ = _train("adam", "cpu:2", fused=False)
    for got, want in zip(fused.kept_gradients, plain.kept_gradients, strict=True):
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
    assert fused_update(make(), tf.distribute.get_strategy()) is None


@pytest.mark.parametrize("size, fused", [
    (1, True), (INLINE_MAX_SIZE, True), (INLINE_MAX_SIZE + 1, False), (200_704, False),
])
def test_adam_kernel_takes_the_weights_it_is_faster_for(size, fused):
    update = fused_update(keras.optimizers.Adam(1e-3), tf.distribute.get_strategy())
    assert update.fused(keras.Variable(np.zeros(size, np.float32))) is fused


def test_plain_adam_leaves_no_weight_to_keras_apply(monkeypatch):
    """Keras's apply converts its update with AutoGraph per weight: slow to trace."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("Keras's apply_gradients was called")

    monkeypatch.setattr(keras.optimizers.Adam, "apply_gradients", refuse)
    _, _, loss = _train("adam", "cpu", fused=True)
    assert np.isfinite(loss)
