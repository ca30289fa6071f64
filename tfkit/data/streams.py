"""A `tf.data.Dataset` as training data: streamed, its task read from the first rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfkit.data.arrays import unbatched_pairs, validation_arrays
from tfkit.data.spec import PEEK, DataSpec, Options, PreparedData
from tfkit.data.target import class_weights, encode, infer_task, target_scale, units


def prepare_dataset(ds: tf.data.Dataset, o: Options, validation: Any) -> PreparedData:
    """A dataset of `(features, label)`: its last part (or `validation`) held out."""
    ds = unbatched_pairs(ds, "data")
    n = _count(ds)
    x_peek, y_peek = next(iter(ds.batch(min(n, PEEK))))
    task, reason = infer_task(y_peek.numpy(), o.task, "the labels")
    class_names = _class_ids(y_peek.numpy(), task)
    per_class = class_weights(o.class_weight, task, class_names, "the labels")
    label_dtype = tf.float32 if task != "multiclass" else tf.int64
    cast = lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, label_dtype))  # noqa: E731
    val_arrays = None
    if validation is None:
        # A stream cannot be shuffled before splitting without reading it all: the
        # last `validation_split` of it is held out.
        n_val = int(n * o.validation_split)
        train = ds.take(n - n_val).map(cast)
        val = ds.skip(n - n_val).map(cast) if n_val else None
    else:
        train = ds.map(cast)
        val_arrays = validation_arrays(validation, x_peek.shape[1:], task, class_names)
        n, n_val = n + len(val_arrays[1]), len(val_arrays[1])
        val = tf.data.Dataset.from_tensor_slices(val_arrays)
    if per_class is not None:
        table = tf.constant(per_class)
        train = train.map(lambda x, y: (x, y, tf.gather(table, tf.cast(y, tf.int64))))
    spec = DataSpec(
        name="dataset", kind="tensor", task=task, input_shape=tuple(x_peek.shape[1:]),
        numeric_columns=(), string_columns=(), class_names=class_names,
        output_units=units(task, class_names), sample=x_peek.numpy(),
        n_train=n - n_val, n_val=n_val, report=(reason,),
        target_scale=target_scale(y_peek.numpy().astype(np.float32), task),
    )
    return PreparedData(spec, train, val, val_arrays)


def _count(ds: tf.data.Dataset) -> int:
    """The dataset's elements, counted by reading it when its cardinality is unknown."""
    n = int(ds.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError("data: an infinite tf.data.Dataset has no epochs; use .take(n) first")
    if n < 0:
        n = int(ds.reduce(0, lambda count, _: count + 1))
    if n == 0:
        raise ValueError("data is empty: the tf.data.Dataset yields no elements")
    return n


def _class_ids(y_peek: np.ndarray, task: str) -> tuple[str, ...] | None:
    """The classes of the peeked labels, which must be the ids 0..C-1."""
    _, class_names = encode(y_peek, task, "the labels")
    if class_names is not None and class_names != tuple(str(i) for i in range(len(class_names))):
        raise ValueError(
            "labels of a tf.data.Dataset must be integer class ids 0..C-1; "
            f"got the values {', '.join(class_names[:10])}"
        )
    return class_names

