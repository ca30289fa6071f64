"""The data spec and what every reader of data shares: `DataSpec`, `PreparedData`, the split."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tfkit.data.messages import Warned

PEEK = 10_000  # rows read from a streamed dataset to infer the task and adapt layers


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
    # model's vocabulary and context (see series.py and corpus.py).
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def notes(self) -> tuple[str, ...]:
        """The report's lines that were not already shown as a `DataWarning`."""
        return tuple(line for line in self.report if not isinstance(line, Warned))

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric_columns + self.string_columns


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedData:
    """A spec with unbatched datasets for training and validation.

    Training elements are `(features, label)` pairs, or `(features, label,
    weight)` triples when `sample_weight` or `class_weight` was given; validation
    elements are always unweighted pairs.
    """

    spec: DataSpec
    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    validation_arrays: tuple[Any, np.ndarray] | None  # in-memory validation set, when known
    train_tensors: tuple[Any, ...] | None = None  # in-memory training set, when known


@dataclasses.dataclass(frozen=True)
class Options:
    """`prepare`'s arguments for tables, arrays and datasets."""

    target: str | None
    task: str
    validation_split: float
    seed: int
    missing: str
    column_types: dict
    sample_weight: str | None
    class_weight: dict | None


def split(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and validation row indices, drawn by `seed`."""
    # Shuffle before splitting: bundled tables are sorted by class.
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_split))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def in_memory(spec, train_x, train_y, val_x, val_y, train_w=None) -> PreparedData:
    """PreparedData over in-memory rows (validation only when `spec.n_val`)."""
    # One tensor copy of the rows, shared by the dataset and the gathering input stream.
    rows = (train_x, train_y) if train_w is None else (train_x, train_y, train_w)
    tensors = tf.nest.map_structure(tf.convert_to_tensor, rows)
    train = tf.data.Dataset.from_tensor_slices(tensors)
    validation = None
    if spec.n_val:
        validation = tf.data.Dataset.from_tensor_slices((val_x, val_y))
    return PreparedData(
        spec, train, validation, (val_x, val_y) if spec.n_val else None, tensors
    )
