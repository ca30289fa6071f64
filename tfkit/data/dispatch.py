"""`prepare`: hand what the user gave `data=` to the reader for its kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfkit.config import MISSING_POLICIES, TASKS
from tfkit.data import corpus, series
from tfkit.data.arrays import prepare_arrays
from tfkit.data.messages import check_choice
from tfkit.data.sources import load
from tfkit.data.spec import Options, PreparedData
from tfkit.data.streams import prepare_dataset
from tfkit.data.tables import prepare_table


def prepare(
    data: Any,
    *,
    target: str | None = None,
    task: str = "auto",
    validation_split: float = 0.2,
    seed: int = 0,
    missing: str = "drop",
    window: int | None = None,
    column_types: dict[str, str] | None = None,
    validation_data: Any = None,
    sample_weight: str | None = None,
    class_weight: dict[Any, float] | None = None,
) -> PreparedData:
    """Check and split the data; infer the task; build unbatched datasets.

    In a table, a text column whose cells are mostly numbers is read as numbers:
    '1,500', ' 12 ', '$1,200' and '12%' (read as 12, the number as written) are
    parsed, and junk such as '?', 'N/A' or '-' becomes a missing value, with one
    `DataWarning` per column. `spec.report` says what was done, and which task
    was inferred and why.

    Args:
        data: a bundled dataset name, a pandas DataFrame, a CSV path, a tuple
            `(X, y)` of arrays, or a `tf.data.Dataset` of `(features, label)`.
        target: the column to predict, for tables.
        task: "auto", "regression", "binary" or "multiclass".
        validation_split: fraction held out for validation, chosen by `seed`.
        seed: makes the split (and everything after it) repeatable.
        missing: "drop" rows with a missing value, or "impute" them (numbers:
            the training rows' median; text: the category "missing").
        window: time steps per example for a series (the input window) or a
            text corpus (the context length); None: the data's default.
        column_types: `{"zip": "categorical", "rooms": "numeric"}` overrides
            the guess for a table's feature columns.
        validation_data: the same kinds as `data`, prepared with the training
            columns, classes and missing policy; when given, all of `data`
            trains and `validation_split` is ignored.
        sample_weight: a table column of non-negative per-row weights (not a
            feature); rows without a weight are dropped.
        class_weight: `{class: weight}`, a class by its name or, when the class
            names are not whole numbers, by its id (0..C-1); unnamed classes
            weigh 1. Whole-number classes (a label column of 1, 2, 3) are named
            by their value.

    Returns:
        PreparedData with the spec and the datasets.

    Raises:
        ValueError: naming what is wrong with the data and what would be valid.

    Example:
        >>> frame = pd.DataFrame({"rooms": ["3", "4", "?", "5"] * 10, "price": range(40)})
        >>> spec = prepare(frame, target="price").spec  # warns: 10 cells of 'rooms' missing
        >>> spec.numeric_columns, spec.n_train + spec.n_val
        (('rooms',), 30)
    """
    check_choice("task", task, TASKS)
    check_choice("missing", missing, MISSING_POLICIES)
    if series.is_series(data) or corpus.is_corpus(data):
        _refuse_table_options(column_types=column_types, validation_data=validation_data,
                              sample_weight=sample_weight, class_weight=class_weight)
        if series.is_series(data):
            return series.prepare_series(data, window=window, validation_split=validation_split)
        return corpus.prepare_text(data, context=window, validation_split=validation_split,
                                   seed=seed)
    name, data, default_target = load(data, "data")
    options = Options(target or default_target, task, validation_split, seed, missing,
                      dict(column_types or {}), sample_weight, class_weight)
    if isinstance(data, pd.DataFrame):
        return prepare_table(data, name, options, validation_data)
    for argument in ("column_types", "sample_weight"):
        if getattr(options, argument):
            raise ValueError(f"{argument} names table columns, but data is "
                             f"{type(data).__name__}; pass a DataFrame or a CSV path")
    if isinstance(data, tf.data.Dataset):
        return prepare_dataset(data, options, validation_data)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(part) for part in data)
        return prepare_arrays(x, y, name, options, validation_data)
    raise ValueError(
        "data must be a bundled dataset name, a pandas DataFrame, a CSV path, "
        f"an (X, y) tuple or a tf.data.Dataset; got {type(data).__name__}"
    )


def _refuse_table_options(**options: Any) -> None:
    """A series or a corpus takes none of the options that name table columns or classes."""
    given = [name for name, value in options.items() if value]
    if given:
        raise ValueError(f"{', '.join(given)} apply to tables, arrays and datasets, "
                         "not to a series or a text corpus")
