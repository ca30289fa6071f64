"""Arrays as training data: an `(X, y)` pair, and validation given as arrays or a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfkit.data.sources import load
from tfkit.data.spec import PEEK, DataSpec, Options, PreparedData, in_memory, split
from tfkit.data.target import (
    class_weights,
    encode,
    infer_task,
    row_weights,
    target_scale,
    units,
)


def prepare_arrays(x, y, name: str, o: Options, validation: Any) -> PreparedData:
    """`(X, y)` checked, labelled and split (or with `validation`), as PreparedData."""
    x, y = check_arrays(x, y, "data")
    task, reason = infer_task(y, o.task, "y")
    labels, class_names = encode(y, task, "y")
    per_class = class_weights(o.class_weight, task, class_names, "y")
    if validation is None:
        train_idx, val_idx = split(len(labels), o.validation_split, o.seed)
        train_x, train_y = x[train_idx], labels[train_idx]
        val_x, val_y = x[val_idx], labels[val_idx]
    else:
        train_x, train_y = x, labels
        val_x, val_y = validation_arrays(validation, x.shape[1:], task, class_names)
    spec = DataSpec(
        name=name, kind="tensor", task=task, input_shape=tuple(x.shape[1:]),
        numeric_columns=(), string_columns=(), class_names=class_names,
        output_units=units(task, class_names), sample=train_x[:PEEK],
        n_train=len(train_y), n_val=len(val_y), report=(reason,),
        target_scale=target_scale(train_y, task),
    )
    weights = row_weights(None, per_class, train_y)
    return in_memory(spec, train_x, train_y, val_x, val_y, weights)


def check_arrays(x: np.ndarray, y: np.ndarray, argument: str) -> tuple[np.ndarray, np.ndarray]:
    """X as float32 [N, ...] (a vector becomes [N, 1]); refuses mismatched, empty or NaN data."""
    prefix = "" if argument == "data" else f"{argument}: "
    if len(x) != len(y):
        raise ValueError(f"{prefix}X and y must have the same length; "
                         f"got len(X)={len(x)}, len(y)={len(y)}")
    if len(x) == 0:
        raise ValueError(f"{argument} is empty: X and y have no rows")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{prefix}X must be numeric; got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    y = _one_label_per_row(y, prefix)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{prefix}X holds {bad} NaN or infinite values; fill or drop them first")
    if np.issubdtype(y.dtype, np.number) and not np.all(np.isfinite(y.astype(np.float64))):
        raise ValueError(
            f"{prefix}y holds {int(np.count_nonzero(~np.isfinite(y.astype(np.float64))))} NaN "
            "or infinite labels; drop those rows first"
        )
    return x, y


def _one_label_per_row(y: np.ndarray, prefix: str) -> np.ndarray:
    """y as [N]: a column of labels [N, 1], as Keras users often keep them, is one label a row."""
    if y.ndim == 2 and y.shape[1] == 1:
        return y.reshape(-1)
    if y.ndim != 1:
        hint = ("; one-hot labels? pass y.argmax(axis=1), the class ids"
                if y.ndim == 2 and np.isin(y, (0, 1)).all() else "")
        raise ValueError(f"{prefix}y must hold one label per row, shape ({len(y)},) or "
                         f"({len(y)}, 1); got shape {y.shape}{hint}")
    return y


def validation_arrays(validation, input_shape, task, class_names,
                      argument: str = "validation_data"):
    """(X, y) or a dataset, in memory, labelled with the training classes."""
    _, validation, _ = load(validation, argument)  # "digits" is (X, y) too
    if isinstance(validation, tf.data.Dataset):
        x, y = _dataset_arrays(validation, argument)
    elif isinstance(validation, (tuple, list)) and len(validation) == 2:
        x, y = (np.asarray(part) for part in validation)
    else:
        raise ValueError(f"{argument} must be the same kind as the training data: an (X, y) "
                         f"tuple or a tf.data.Dataset; got {type(validation).__name__}")
    x, y = check_arrays(x, y, argument)
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{argument}: X's examples have shape {tuple(x.shape[1:])}; "
                         f"the training data's have {tuple(input_shape)}")
    labels, _ = encode(y, task, f"{argument}'s y", class_names)
    return x, labels


def unbatched_pairs(ds: tf.data.Dataset, argument: str) -> tf.data.Dataset:
    """A dataset of `(features, label)` pairs, one example per element."""
    if not (isinstance(ds.element_spec, tuple) and len(ds.element_spec) == 2):
        raise ValueError(
            f"a tf.data.Dataset must yield (features, label) pairs; {argument} yields "
            f"{ds.element_spec}"
        )
    if isinstance(ds.element_spec[0], dict):
        raise ValueError("a tf.data.Dataset of dict features is not supported; pass a DataFrame")
    if ds.element_spec[1].shape.rank and ds.element_spec[1].shape[0] is None:
        ds = ds.unbatch()  # batched input: tfkit batches by the global batch size itself
    if ds.element_spec[1].shape == (1,):  # a label column [N, 1]: one label a row, as for arrays
        ds = ds.map(lambda x, y: (x, tf.reshape(y, [])))
    if ds.element_spec[1].shape.rank:
        raise ValueError(
            f"{argument}: a tf.data.Dataset's labels must be one label per example; its "
            f"labels have shape {ds.element_spec[1].shape} each (one-hot labels? map them "
            "to class ids with tf.argmax(label, axis=-1))")
    return ds


def _dataset_arrays(ds: tf.data.Dataset, argument: str) -> tuple[np.ndarray, np.ndarray]:
    parts = list(unbatched_pairs(ds, argument).batch(4096).as_numpy_iterator())
    if not parts:
        raise ValueError(f"{argument} is empty: the tf.data.Dataset yields no elements")
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(2))
