"""Each speed-up option trains to the plain path's weights: the reference step, fed by an
input iterator, one step per call, with Keras's own update."""

import functools
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkit import distribute, options
from tfkit.options import StepOptions
from tfkit.steps import Steps

PLAIN = StepOptions(steps_per_call=1, in_memory_input=False, keep_gradients=False,
                    fused_update=False)
STEPS, ROWS, BATCH = 6, 64, 16  # 4 steps an epoch: the sixth step is in the second epoch
SWITCHED_ON = {
    "many steps per call": {"steps_per_call": STEPS},
    "in-memory input": {"in_memory_input": True},
    "kept gradients": {"keep_gradients": True},
    "fused update": {"fused_update": True},
    "all of them": {"steps_per_call": STEPS, "in_memory_input": True, "keep_gradients": True,
                    "fused_update": True},
}


def _data():
    x = np.random.default_rng(0).standard_normal((ROWS, 256)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64)
    spec = types.SimpleNamespace(n_train=ROWS)
    tensors = (tf.constant(x), tf.constant(y))
    return types.SimpleNamespace(spec=spec, train=tf.data.Dataset.from_tensor_slices(tensors),
                                 train_tensors=tensors)


def train(strategy_name: str, step_options: StepOptions, optimizer: str = "adam"):
    """Weights Adam's kernel takes (8, 8x2, 2) and weights it leaves to Keras's ops."""
    strategy = distribute.resolve(strategy_name)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        made = (keras.optimizers.Adam(1e-3) if optimizer == "adam"
                else keras.optimizers.SGD(1e-2, momentum=0.9))
    steps = Steps(model=model, optimizer=made, task="multiclass", strategy=strategy,
                  global_batch_size=BATCH, options=step_options)
    iterator = options.train_iterator(
        _data(), strategy=strategy, global_batch=BATCH, seed=0, epochs=2, start_step=0,
        in_memory_input=step_options.in_memory_input)
    per_call = step_options.steps_per_call or 1
    for _ in range(STEPS // per_call):
        totals, _ = steps.train(iterator, tf.constant(per_call))
    values = [v.numpy() for v in model.weights + steps.optimizer.variables]
    return steps, values, float(totals["last_loss"])


@functools.cache
def plain(strategy_name: str, optimizer: str = "adam"):
    return train(strategy_name, PLAIN, optimizer)


@pytest.mark.parametrize("strategy", ["cpu", "cpu:2"])
@pytest.mark.parametrize("switched", list(SWITCHED_ON))
def test_each_option_trains_to_the_plain_paths_weights(switched, strategy):
    fast, fast_values, fast_loss = train(strategy, StepOptions(**{
        **vars(PLAIN), **SWITCHED_ON[switched]}))
    _, plain_values, plain_loss = plain(strategy)
    assert fast.optimizer.iterations.numpy() == STEPS
    for got, want in zip(fast_values, plain_values, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert fast_loss == pytest.approx(plain_loss, rel=1e-6)


@pytest.mark.parametrize("strategy", ["cpu", "cpu:2"])
def test_fused_sgd_with_momentum_trains_to_keras_sgds_weights(strategy):
    fused, fused_values, _ = train(strategy, StepOptions(**{**vars(PLAIN), "fused_update": True}),
                                   optimizer="sgd")
    assert type(fused.optimizer).__name__ == "FusedSGD"
    for got, want in zip(fused_values, plain(strategy, "sgd")[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_the_in_memory_input_is_used_on_one_cpu_device():
    """Otherwise the option would pass its test without ever being exercised."""
    on = options.train_iterator(_data(), strategy=distribute.resolve("cpu"), global_batch=BATCH,
                                seed=0, epochs=2, start_step=0, in_memory_input=True)
    off = options.train_iterator(_data(), strategy=distribute.resolve("cpu"), global_batch=BATCH,
                                 seed=0, epochs=2, start_step=0, in_memory_input=False)
    assert type(on).__name__ == "GatheredBatches" and type(off).__name__ != "GatheredBatches"
