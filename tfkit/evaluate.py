"""`tfkit.evaluate()`: the loss and metrics of a trained model on data it has not seen."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkit import adapt
from tfkit import data as data_lib
from tfkit.export_inputs import argument_names
from tfkit.steps import example_losses, labels_for, per_example_loss


def evaluate(source: Any, data: Any, *, target: str | None = None,
             batch_size: int = 1024) -> dict[str, float]:
    """Loss and metrics on new data, read and cleaned as the training data was.

    Rows with a missing cell are filled as training filled them when the run
    used `missing="impute"`, and dropped otherwise (`count` is the rows
    scored); given a model or an export, which keep no such policy, they are
    dropped.

    Args:
        source: a `TrainResult` (its data's columns, classes, loss and metrics),
            a `keras.Model` (the task inferred from `data`; a compiled model's
            loss), or an exported SavedModel folder (`models/houses/1`, or
            `models/houses` for its newest version).
        data: the same kinds `train()` takes: a DataFrame, a CSV path, an
            `(X, y)` tuple, a bundled name, a tf.data.Dataset.
        target: the column to predict, for a table; default the run's.
        batch_size: rows per model call.

    Returns:
        `{"loss": ..., <metric>: ..., "count": rows}` in the units of the
        run's history (`val_` values for the same rows would match). An
        exported classifier gives `accuracy` only (its loss needs the class
        order, which a SavedModel does not keep).

    Raises:
        ValueError: the data does not fit the model (columns, classes, shapes).

    Example:
        >>> tfkit.evaluate(result, "holdout.csv")  # doctest: +SKIP
        {'loss': 0.012, 'mae': 13487.9, 'count': 200}
    """
    if isinstance(source, (str, os.PathLike)):
        return _evaluate_export(str(source), data, target, batch_size)
    if isinstance(source, keras.Model):
        spec = data_lib.prepare(data, target=target, validation_split=0.0).spec
        x, y = data_lib.prepare_like(data, spec, target=target)
        loss, metrics = adapt.loss_and_metrics(source, None, None)
        return _scores(source, x, y, spec, loss, metrics, None, batch_size)
    spec, config = source.spec, source.config
    x, y = data_lib.prepare_like(data, spec, target=target, missing=config.missing)
    loss, metrics = adapt.loss_and_metrics(config.model, config.loss, config.metrics)
    scale = spec.target_scale if config.standardize_target else None
    return _scores(source.model, x, y, spec, loss, metrics, scale, batch_size)


def _scores(model, x, y, spec, loss, metrics, scale, batch_size) -> dict[str, float]:
    predictions = tf.constant(_predict(model, x, batch_size))
    y = tf.constant(y)
    losses = example_losses(per_example_loss(loss, spec.task), y, predictions, spec.task, scale)
    out = {"loss": float(tf.reduce_mean(losses))}
    labels = labels_for(y, predictions, spec.task)
    for metric in adapt.metric_objects(metrics, spec.task) or _default(spec.task):
        metric.update_state(labels, predictions)
        out[metric.name] = float(keras.ops.convert_to_numpy(metric.result()))
    out["count"] = int(losses.shape[0])
    return out


def _default(task: str) -> list[keras.metrics.Metric]:
    if task == "regression":
        return [keras.metrics.MeanAbsoluteError(name="mae")]
    return adapt.metric_objects(["accuracy"], task)


def _predict(model, x, batch_size) -> np.ndarray:
    batches = data_lib.row_batches(x, batch_size)
    return np.concatenate([keras.ops.convert_to_numpy(model(b, training=False))
                           for b in batches]).astype(np.float32)


def _evaluate_export(path: str, data: Any, target: str | None, batch_size: int):
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = [int(v) for v in os.listdir(path) if v.isdigit()]
        if not versions:
            raise ValueError(f"{path!r} holds no SavedModel and no version folders")
        path = os.path.join(path, str(max(versions)))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    spec = data_lib.prepare(data, target=target, validation_split=0.0).spec
    x, y = data_lib.prepare_like(data, spec, target=target)
    if isinstance(x, dict):  # table columns: the signature takes [N] values, by argument name
        args, takes = argument_names(list(x)), serve.structured_input_signature[1]
        x = {args[name]: np.asarray(values).reshape(-1) for name, values in x.items()
             if args[name] in takes}
    batches = data_lib.row_batches(x, batch_size)
    outputs = [serve(**b) if isinstance(b, dict) else serve(b) for b in batches]
    if "predictions" in outputs[0]:
        predictions = np.concatenate([o["predictions"].numpy() for o in outputs])
        error = predictions.reshape(-1) - y.astype(np.float32).reshape(-1)
        return {"loss": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error))),
                "count": len(y)}
    classes = np.concatenate([o["classes"].numpy() for o in outputs]).astype(str)
    names = np.asarray(spec.class_names)[np.asarray(y, dtype=np.int64).reshape(-1)]
    return {"accuracy": float(np.mean(classes == names)), "count": len(y)}
