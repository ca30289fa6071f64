"""Turn what the user hands `train(data=...)` into a data spec and tf.data pipelines."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfkit import datasets

log = logging.getLogger(__name__)

MAX_CLASSES_FOR_INTEGER_TARGET = 32  # more distinct integers than this reads as a quantity
_PEEK = 10_000  # rows read from a streamed dataset to infer the task and adapt layers


@dataclasses.dataclass(frozen=True, eq=False)
class DataSpec:
    """What a model builder needs to know about the data.

    `sample` holds up to 10k training features (a dict of column arrays for a
    table, an array otherwise) for preprocessing layers to adapt to.
    """

    name: str
    kind: str  # "table" | "tensor" | "text" (token ids)
    task: str  # "regression" | "binary" | "multiclass"
    input_shape: tuple[int, ...]  # per example, for "tensor" data
    numeric_columns: tuple[str, ...]
    string_columns: tuple[str, ...]
    class_names: tuple[str, ...] | None
    output_units: int
    sample: Any
    n_train: int
    n_val: int
    report: tuple[str, ...] = ()  # what was done to the data, in words
    target: str | None = None  # the table column predicted, as the user named it
    # Regression: (mean, std) of the training targets; the model learns (y - mean) / std.
    target_scale: tuple[float, float] | None = None
    # Facts a builder or the export needs beyond shapes: a series' scaling, a text
    # model's vocabulary and context (see sequences.py and text.py).
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric_columns + self.string_columns


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedData:
    """A spec with unbatched `(features, label)` datasets for training and validation."""

    spec: DataSpec
    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    validation_arrays: tuple[Any, np.ndarray] | None  # in-memory validation set, when known
    train_tensors: tuple[Any, tf.Tensor] | None = None  # in-memory training set, when known


def prepare(
    data: Any,
    *,
    target: str | None = None,
    task: str = "auto",
    validation_split: float = 0.2,
    seed: int = 0,
    missing: str = "drop",
    window: int | None = None,
) -> PreparedData:
    """Check and split the data; infer the task; build unbatched datasets.

    Args:
        data: a bundled dataset name, a pandas DataFrame, a CSV path, a tuple
            `(X, y)` of arrays, or a `tf.data.Dataset` of `(features, label)`.
        target: the column to predict, for tables.
        task: "auto", "regression", "binary" or "multiclass".
        validation_split: fraction held out for validation, chosen by `seed`.
        seed: makes the split (and everything after it) repeatable.
        missing: "drop" rows with a missing value, or "impute" them.
        window: time steps per example for a series (the input window) or a
            text corpus (the context length); None: the data's default.

    Returns:
        PreparedData with the spec and the datasets.

    Raises:
        ValueError: naming what is wrong with the data and what would be valid.
    """
    from tfkit import sequences, text  # they build on this module

    if sequences.is_series(data):
        return sequences.prepare_series(data, window=window, validation_split=validation_split)
    if text.is_corpus(data):
        return text.prepare_text(data, context=window, validation_split=validation_split,
                                 seed=seed)
    name = "data"
    if isinstance(data, str) and data in datasets.BUNDLED:
        name = data
        target = target or datasets.default_target(data)
        data = datasets.load(data)
    elif isinstance(data, (str, os.PathLike)):
        if not os.path.exists(data):
            raise ValueError(
                f"data {str(data)!r} is neither a bundled dataset "
                f"({', '.join(datasets.available())}) nor an existing CSV file"
            )
        name = os.path.splitext(os.path.basename(str(data)))[0]
        data = pd.read_csv(data)
    if isinstance(data, pd.DataFrame):
        return _prepare_table(data, name, target, task, validation_split, seed, missing)
    if isinstance(data, tf.data.Dataset):
        return _prepare_dataset(data, task, validation_split)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(part) for part in data)
        return _prepare_arrays(x, y, name, task, validation_split, seed)
    raise ValueError(
        "data must be a bundled dataset name, a pandas DataFrame, a CSV path, "
        f"an (X, y) tuple or a tf.data.Dataset; got {type(data).__name__}"
    )


def _prepare_table(frame, name, target, task, validation_split, seed, missing) -> PreparedData:
    if frame.empty:
        raise ValueError("data is empty: the table has no rows")
    if target is None or target not in frame.columns:
        what = "target is required for a table" if target is None else f"no column {target!r}"
        raise ValueError(f"{what}; the columns are: {', '.join(map(str, frame.columns))}")
    report = []
    unlabeled = frame[target].isna()
    if unlabeled.any():
        report.append(f"dropped {int(unlabeled.sum())} rows with no {target!r}")
        frame = frame[~unlabeled]
    features = frame.drop(columns=[target])
    numeric = tuple(c for c in features.columns if pd.api.types.is_numeric_dtype(features[c]))
    strings = tuple(c for c in features.columns if c not in numeric)
    features, note = _handle_missing(features, numeric, strings, missing)
    if note:
        report.append(note)
    frame = frame.loc[features.index]
    if frame.empty:
        raise ValueError("data is empty after dropping rows with missing values")
    task, labels, class_names = _encode_target(frame[target].to_numpy(), task, target)
    columns = {c: features[c].to_numpy(np.float32).reshape(-1, 1) for c in numeric}
    columns.update({c: features[c].astype(str).to_numpy(object).reshape(-1, 1) for c in strings})
    train_idx, val_idx = _split(len(labels), validation_split, seed)
    train_x = {c: v[train_idx] for c, v in columns.items()}
    val_x = {c: v[val_idx] for c, v in columns.items()}
    spec = DataSpec(
        name=name, kind="table", task=task, input_shape=(), numeric_columns=numeric,
        string_columns=strings, class_names=class_names, output_units=_units(task, class_names),
        sample=train_x, n_train=len(train_idx), n_val=len(val_idx), report=tuple(report),
    )
    return _in_memory(spec, train_x, labels[train_idx], val_x, labels[val_idx])


def _handle_missing(features, numeric, strings, missing):
    gaps = features.isna()
    cells, rows = int(gaps.to_numpy().sum()), int(gaps.any(axis=1).sum())
    if not cells:
        return features, ""
    if missing == "drop":
        return features[~gaps.any(axis=1)], f"dropped {rows} rows with {cells} missing cells"
    filled = features.copy()
    for c in numeric:
        filled[c] = filled[c].fillna(filled[c].median())
    for c in strings:
        filled[c] = filled[c].astype(object).where(filled[c].notna(), "missing")
    return filled, (
        f"imputed {cells} missing cells in {rows} rows "
        "(numbers: the column's median; text: the category 'missing')"
    )


def _prepare_arrays(x, y, name, task, validation_split, seed) -> PreparedData:
    if len(x) != len(y):
        raise ValueError(f"X and y must have the same length; got len(X)={len(x)}, len(y)={len(y)}")
    if len(x) == 0:
        raise ValueError("data is empty: X and y have no rows")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"X must be numeric; got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"X holds {bad} NaN or infinite values; fill or drop them first")
    if np.issubdtype(y.dtype, np.number) and not np.all(np.isfinite(y.astype(np.float64))):
        raise ValueError(
            f"y holds {int(np.count_nonzero(~np.isfinite(y.astype(np.float64))))} NaN or "
            "infinite labels; drop those rows first"
        )
    task, labels, class_names = _encode_target(y, task, "y")
    train_idx, val_idx = _split(len(labels), validation_split, seed)
    spec = DataSpec(
        name=name, kind="tensor", task=task, input_shape=tuple(x.shape[1:]),
        numeric_columns=(), string_columns=(), class_names=class_names,
        output_units=_units(task, class_names), sample=x[train_idx[:_PEEK]],
        n_train=len(train_idx), n_val=len(val_idx),
    )
    return _in_memory(spec, x[train_idx], labels[train_idx], x[val_idx], labels[val_idx])


def _prepare_dataset(ds: tf.data.Dataset, task: str, validation_split: float) -> PreparedData:
    if not (isinstance(ds.element_spec, tuple) and len(ds.element_spec) == 2):
        raise ValueError(
            f"a tf.data.Dataset must yield (features, label) pairs; got {ds.element_spec}"
        )
    if ds.element_spec[1].shape.rank and ds.element_spec[1].shape[0] is None:
        ds = ds.unbatch()  # batched input: tfkit batches by the global batch size itself
    n = int(ds.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError("data: an infinite tf.data.Dataset has no epochs; use .take(n) first")
    if n < 0:
        n = int(ds.reduce(0, lambda count, _: count + 1))
    if n == 0:
        raise ValueError("data is empty: the tf.data.Dataset yields no elements")
    x_peek, y_peek = next(iter(ds.batch(min(n, _PEEK))))
    if isinstance(x_peek, dict):
        raise ValueError("a tf.data.Dataset of dict features is not supported; pass a DataFrame")
    task, _, class_names = _encode_target(y_peek.numpy(), task, "label")
    if class_names is not None and class_names != tuple(str(i) for i in range(len(class_names))):
        raise ValueError(
            "labels of a tf.data.Dataset must be integer class ids 0..C-1; "
            f"got the values {', '.join(class_names[:10])}"
        )
    n_val = int(n * validation_split)
    spec = DataSpec(
        name="dataset", kind="tensor", task=task, input_shape=tuple(x_peek.shape[1:]),
        numeric_columns=(), string_columns=(), class_names=class_names,
        output_units=_units(task, class_names), sample=x_peek.numpy(),
        n_train=n - n_val, n_val=n_val,
    )
    # A stream cannot be shuffled before splitting without reading it all: the
    # last `validation_split` of it is held out.
    label_dtype = tf.float32 if task != "multiclass" else tf.int64
    cast = lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, label_dtype))  # noqa: E731
    train = ds.take(n - n_val).map(cast)
    validation = ds.skip(n - n_val).map(cast) if n_val else None
    return PreparedData(spec, train, validation, None)


def _encode_target(y: np.ndarray, task: str, what: str):
    """Returns (task, labels, class_names); labels are int64 ids or float32 values."""
    numeric = np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_)
    if task == "auto":
        integer = numeric and np.all(np.mod(y.astype(np.float64), 1) == 0)
        distinct = len(np.unique(y)) if not numeric or integer else 0
        if not numeric or (integer and distinct <= MAX_CLASSES_FOR_INTEGER_TARGET):
            task = "binary" if distinct == 2 else "multiclass"
        else:
            task = "regression"
    if task == "regression":
        if not numeric:
            raise ValueError(
                f"{what} holds text labels (e.g. {y[0]!r}) but task='regression' needs numbers; "
                "use task='multiclass' or 'binary', or a numeric target"
            )
        return task, y.astype(np.float32), None
    values = y.astype(str) if not numeric else y
    classes, labels = np.unique(values, return_inverse=True)
    if task == "binary" and len(classes) != 2:
        raise ValueError(f"task='binary' needs exactly 2 classes in {what}; found {len(classes)}")
    if len(classes) < 2:
        raise ValueError(f"{what} has a single class ({classes[0]!r}); nothing to learn")
    labels = labels.astype(np.float32 if task == "binary" else np.int64)
    return task, labels, tuple(str(c) for c in classes)


def _units(task: str, class_names) -> int:
    return len(class_names) if task == "multiclass" else 1


def _split(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Shuffle before splitting: bundled tables are sorted by class.
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_split))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _in_memory(spec, train_x, train_y, val_x, val_y) -> PreparedData:
    # One tensor copy of the rows, shared by the dataset and the gathering input stream.
    tensors = tf.nest.map_structure(tf.convert_to_tensor, (train_x, train_y))
    train = tf.data.Dataset.from_tensor_slices(tensors)
    validation = None
    if spec.n_val:
        validation = tf.data.Dataset.from_tensor_slices((val_x, val_y))
    for line in spec.report:
        log.info("data: %s", line)
    return PreparedData(
        spec, train, validation, (val_x, val_y) if spec.n_val else None, tensors
    )


def steps_per_epoch(n_train: int, global_batch_size: int) -> int:
    """Full global batches per epoch; the remainder rows wait for the next shuffle."""
    return n_train // global_batch_size


def train_input_fn(
    train: tf.data.Dataset, *, n_train: int, global_batch_size: int, seed: int,
    epochs: int, start_step: int = 0, tensors: Any = None,
):
    """A `distribute_datasets_from_function` input function for all epochs in one stream.

    Epoch e is the training set in a seeded order, cut to whole global
    batches. Every input pipeline (one per worker) makes the same stream, cuts
    it into per-replica batches and keeps every k-th: global step s is then
    made of batches s·R … s·R+R-1 on any layout of R replicas, so one device,
    `cpu:2` and two workers train on exactly the same global batches.
    Resuming at `start_step` starts at its epoch and skips the batches already
    used. With the rows in memory (`tensors`), an epoch is one shuffle of the
    row indices and whole batches are gathered, rather than every row passing
    through a shuffle buffer one at a time (measured faster, see
    benchmarks/RESULTS.md); a streamed dataset is shuffled through a buffer.
    """
    per_epoch = steps_per_epoch(n_train, global_batch_size)
    rows = per_epoch * global_batch_size
    first_epoch, steps_done = divmod(start_step, per_epoch)

    def input_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        replicas = global_batch_size // per_replica
        if tensors is not None:
            batches = _gathered(tensors, n_train, rows, per_replica, seed, first_epoch, epochs)
        else:
            epoch = train.shuffle(min(n_train, 100_000), seed=seed, reshuffle_each_iteration=True)
            stream = epoch.take(rows).repeat(epochs).skip(first_epoch * rows)
            batches = stream.batch(per_replica, drop_remainder=True)
        batches = batches.skip(steps_done * replicas)
        if ctx.num_input_pipelines > 1:
            batches = batches.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return batches.prefetch(tf.data.AUTOTUNE)

    return input_fn


def _gathered(tensors, n_train, rows, per_replica, seed, first_epoch, epochs) -> tf.data.Dataset:
    """Per-replica batches gathered from in-memory rows, one seeded shuffle per epoch."""

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = _epoch_order(n_train, rows, seed, epoch)
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1, per_replica]))

    def gather(index: tf.Tensor) -> Any:
        return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors)

    stream = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
    return stream.map(gather)


def _epoch_order(n_train: int, rows: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The first `rows` row indices of epoch `epoch`'s seeded shuffle."""
    seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(
        tf.range(n_train, dtype=tf.int64), seed=seeds
    )[:rows]


class GatheredBatches:
    """Global batches gathered from in-memory rows inside the compiled training loop.

    Batch for batch the same as `train_input_fn`'s in-memory stream (epoch e
    is the same seeded shuffle of the row indices), but with no input iterator:
    `next()` in the traced loop reads a step variable, slices that step's
    indices from the epoch's order and gathers the rows, a few small ops. On one
    CPU device this replaces the iterator's per-batch hand-off (measured in
    benchmarks/RESULTS.md). A new epoch's order is drawn when the step crosses
    into it, so any number of steps per call works.

    Example:
        >>> x = tf.range(8, dtype=tf.float32)[:, None]
        >>> batches = GatheredBatches((x, tf.range(8)), n_train=8, global_batch_size=4, seed=0)
        >>> [int(n) for n in next(batches)[0].shape]
        [4, 1]
    """

    def __init__(self, tensors: Any, *, n_train: int, global_batch_size: int, seed: int,
                 start_step: int = 0) -> None:
        self._tensors, self._n_train, self._seed = tensors, n_train, seed
        self._per_epoch = steps_per_epoch(n_train, global_batch_size)
        self._rows = self._per_epoch * global_batch_size
        self._step = tf.Variable(start_step, dtype=tf.int64, trainable=False)
        self._epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)  # whose order is held
        self._order = tf.Variable(tf.zeros([self._per_epoch, global_batch_size], tf.int64),
                                  trainable=False)

    def __iter__(self) -> GatheredBatches:
        return self

    def __next__(self) -> Any:
        step = self._step.assign_add(1) - 1
        epoch, index = step // self._per_epoch, step % self._per_epoch
        held = tf.cond(tf.equal(epoch, self._epoch), lambda: tf.identity(self._epoch),
                       lambda: self._draw(epoch))
        with tf.control_dependencies([held]):
            rows = tf.gather(self._order, index)
        return tf.nest.map_structure(lambda t: tf.gather(t, rows), self._tensors)

    def _draw(self, epoch: tf.Tensor) -> tf.Tensor:
        order = _epoch_order(self._n_train, self._rows, self._seed, epoch)
        with tf.control_dependencies([self._order.assign(tf.reshape(order, self._order.shape))]):
            return self._epoch.assign(epoch)


def eval_input_fn(validation: tf.data.Dataset, *, global_batch_size: int):
    """Input function for the validation pass: every row once, in order."""

    def input_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = validation
        if ctx.num_input_pipelines > 1:
            shard = validation.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        return shard.batch(per_replica).prefetch(tf.data.AUTOTUNE)

    return input_fn


def model_inputs(features: Any, spec: DataSpec) -> Any:
    """Raw features in the layout the model takes: [N, 1] columns for a table.

    Args:
        features: for a table, a DataFrame or a dict of column values (extra
            columns, such as the target, are ignored); otherwise an array.
        spec: the spec the model was built from.

    Raises:
        ValueError: a column the model needs is missing.
    """
    if spec.kind == "text":
        return np.asarray(features, dtype=np.int32)
    if spec.kind != "table":
        return np.asarray(features, dtype=np.float32)
    missing = [c for c in spec.columns if c not in features]
    if missing:
        raise ValueError(f"features lack the column(s) {', '.join(missing)}; "
                         f"the model takes: {', '.join(spec.columns)}")
    out = {c: np.asarray(features[c], dtype=np.float32).reshape(-1, 1)
           for c in spec.numeric_columns}
    out.update({c: np.asarray(features[c]).astype(str).astype(object).reshape(-1, 1)
                for c in spec.string_columns})
    return out
