"""tfkit.train(): it learns, it is exact across replicas, and it refuses bad input early."""

import glob
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

import tfkit
from tfkit import datasets, distribute

QUIET = {"verbose": False, "export": None, "logdir": None}


def test_penguins_mlp_reaches_95_percent():
    result = tfkit.train("penguins", target="species", model="mlp", epochs=20, **QUIET)
    assert result.history["val_accuracy"][-1] >= 0.95
    assert result.history["loss"][-1] < result.history["loss"][0] / 5
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result.history)
    assert len(result.history["loss"]) == 20


def test_auto_mpg_mlp_mae_below_2_5():
    result = tfkit.train("auto_mpg", model="mlp", epochs=60, **QUIET)
    assert result.spec.task == "regression"
    assert result.history["val_mae"][-1] <= 2.5


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


@pytest.fixture(scope="module")
def digits_cnn():
    """The digits CNN at float32, trained once for the tests that need it; with its log."""
    records, logger = _Records(), logging.getLogger("tfkit")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        result = tfkit.train("digits", model="cnn", epochs=10, **QUIET)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    return result, records.text


def test_digits_cnn_reaches_95_percent(digits_cnn):
    result, log = digits_cnn
    assert result.history["val_accuracy"][-1] >= 0.95
    # The oneDNN note goes out only for a convolutional model on CPUs without those kernels.
    noted = "TF_ENABLE_ONEDNN_OPTS=1" in log
    assert noted == (distribute.onednn_kernels() is False)


def test_linear_regression_recovers_slope_and_intercept():
    x, y = datasets.make_linear(2000, slope=3.0, intercept=2.0, noise=0.1)
    result = tfkit.train((x, y), model="linear_regression", learning_rate=0.05, epochs=20,
                         **QUIET)
    at_0, at_1 = result.predict(np.array([[0.0], [1.0]]))[:, 0]
    assert at_1 - at_0 == pytest.approx(3.0, rel=0.02)
    assert at_0 == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_one_device_and_two_replicas_train_the_same_model(l2):
    """The proof that the loss is scaled right across replicas (and the L2 penalty too)."""
    options = dict(epochs=3, batch_size=32, seed=3, model_kwargs={"l2": l2}, **QUIET)
    one = tfkit.train("penguins", strategy="cpu", **options)
    two = tfkit.train("penguins", strategy="cpu:2", **options)
    assert two.strategy.num_replicas_in_sync == 2
    rows = datasets.load("penguins").dropna()
    np.testing.assert_allclose(one.predict(rows), two.predict(rows), atol=1e-4)
    for key in ("loss", "val_loss", "val_accuracy"):  # validation: each replica its share
        np.testing.assert_allclose(one.history[key], two.history[key], rtol=1e-5)


def test_clipping_scales_the_step_by_the_global_norm_across_replicas():
    """One SGD step on two replicas: the update is lr * g * clip / ||g||, with g the gradient
    of the whole global batch (not a replica's share), and grad_norm is ||g|| before clipping."""
    rng = np.random.default_rng(0)
    rows, lr = 16, 0.1
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    # Two very different halves: each replica's share of the gradient has its own norm.
    y = np.where(np.arange(rows) < rows // 2, 1.0, 20.0) + rng.normal(size=rows)
    w0 = np.array([[0.5], [-0.25], [1.0]], np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.set_weights([w0, np.zeros(1, np.float32)])
    # By hand: the gradient of the mean squared error over the 16 rows.
    error = x @ w0[:, 0] - y
    grad_w, grad_b = 2 * x.T @ error / rows, np.array([2 * error.mean()])
    norm = float(np.sqrt(np.sum(grad_w**2) + np.sum(grad_b**2)))
    clip = norm / 4
    result = tfkit.train((x, y.astype(np.float32)), model=model, task="regression",
                         standardize_target=False, strategy="cpu:2", batch_size=rows, epochs=1,
                         validation_split=0.0, optimizer="sgd", learning_rate=lr,
                         clip_norm=clip, **QUIET)
    assert result.strategy.num_replicas_in_sync == 2
    w1, b1 = result.model.get_weights()
    # SGD's momentum starts at zero, so the first step is -lr * (clipped gradient).
    np.testing.assert_allclose(w1[:, 0] - w0[:, 0], -lr * grad_w * clip / norm, rtol=1e-4)
    np.testing.assert_allclose(b1, -lr * grad_b * clip / norm, rtol=1e-4)
    assert result.stats["grad_norm"] == pytest.approx([norm], rel=1e-5)


def test_keras_callbacks_are_driven_and_early_stopping_stops():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))

    result = tfkit.train("penguins", epochs=200, learning_rate=0.05,
                         early_stopping_patience=2, callbacks=[Record()], **QUIET)
    assert len(result.history["loss"]) < 200
    assert seen[0][0] == 0 and "val_loss" in seen[0][1]


def test_epoch_scalars_are_written_for_train_and_validation(tmp_path):
    result = tfkit.train("penguins", epochs=3, logdir=str(tmp_path), run_name="r1",
                         verbose=False, export=None)
    assert result.logdir == os.path.join(str(tmp_path), "r1")
    tags = {}
    for split in ("train", "validation"):
        for path in glob.glob(os.path.join(result.logdir, split, "events.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    tags.setdefault(split, set()).add(value.tag)
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= tags["train"]
    assert {"epoch_loss", "epoch_accuracy"} <= tags["validation"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": "penguins", "target": "wings"}, "no column 'wings'; the columns are"),
        ({"data": "penguins", "model": "transformerz"}, "unknown model 'transformerz'"),
        ({"data": (np.zeros((9, 2)), np.zeros(4))}, r"len\(X\)=9, len\(y\)=4"),
        ({"data": "penguins", "batch_size": 0}, "batch_size must be a positive integer"),
        ({"data": "penguins", "epochs": -1}, "epochs must be a positive integer"),
        ({"data": "penguins", "strategy": "warp"}, "strategy must be one of"),
        ({"data": "penguins", "batch_size": 33, "strategy": "cpu:2"},
         "batch_size 33 must divide evenly over 2 replicas"),
        ({"data": "penguins", "epoch": 3}, "unknown option\\(s\\) epoch; valid options"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, options, message):
    data = options.pop("data")
    with pytest.raises(ValueError, match=message):
        tfkit.train(data, logdir=str(tmp_path), export=str(tmp_path / "models"), **options)
    assert not (tmp_path / "models").exists()
    assert os.listdir(tmp_path) == []


def test_tf_data_input_trains():
    x, y = datasets.make_classification(600, 8, 2, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    result = tfkit.train(ds, model="logistic_regression", epochs=5, learning_rate=0.05, **QUIET)
    assert result.spec.task == "binary"
    assert result.history["val_accuracy"][-1] > 0.9


def test_export_reloads_with_raw_columns(tmp_path):
    result = tfkit.train("penguins", epochs=3, verbose=False, logdir=None,
                         export=str(tmp_path))
    assert result.export_path == str(tmp_path / "penguins" / "1")
    loaded = tf.saved_model.load(result.export_path)
    serve = loaded.signatures["serving_default"]
    rows = datasets.load("penguins").dropna().head(5)
    feed = {c: tf.constant(rows[c].to_numpy().astype(np.float32 if c in result.spec.numeric_columns
                                                      else str))
            for c in result.spec.columns}
    served = serve(**feed)["probabilities"].numpy()
    np.testing.assert_allclose(served, result.predict(rows), atol=1e-5)


def test_mixed_bfloat16_matches_float32_accuracy_on_digits(digits_cnn):
    full, _ = digits_cnn
    mixed = tfkit.train("digits", model="cnn", epochs=10, mixed_precision="mixed_bfloat16",
                        **QUIET)
    assert mixed.model.get_layer("conv_0").compute_dtype == "bfloat16"
    assert mixed.model.output.dtype == "float32"  # the head stays in float32
    assert abs(mixed.history["val_accuracy"][-1] - full.history["val_accuracy"][-1]) <= 0.01
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_op_determinism_is_on_for_the_run_and_off_again_after_it():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(tf_config.is_op_determinism_enabled())

    assert not tf_config.is_op_determinism_enabled()
    tfkit.train("penguins", epochs=1, callbacks=[Record()], **QUIET)
    assert seen == [True]  # on a CPU by default: exact resume, repeatable runs
    assert not tf_config.is_op_determinism_enabled()  # the process's own setting is back


def test_mixed_float16_scales_the_loss_and_still_learns():
    result = tfkit.train("penguins", epochs=5, mixed_precision="mixed_float16", clip_norm=1.0,
                         **QUIET)
    assert result.model.get_layer("dense_0").compute_dtype == "float16"
    assert result.history["loss"][-1] < result.history["loss"][0]
