"""New data read as the training data behind a spec was: for evaluation and prediction."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from tfkit.config import MISSING_POLICIES
from tfkit.data.arrays import validation_arrays
from tfkit.data.cells import read_column, to_number
from tfkit.data.messages import check_choice
from tfkit.data.sources import load
from tfkit.data.spec import DataSpec, Options
from tfkit.data.tables import columns, median, read_like


def prepare_like(data: Any, spec: DataSpec, *, target: str | None = None,
                 missing: str = "drop") -> tuple[Any, np.ndarray]:
    """New data's features and labels, read as the training data behind `spec` was.

    A table's columns are read with the training kinds (junk cells become
    missing, with a `DataWarning`) and its labels are ids into the training
    classes; extra columns are ignored.

    Args:
        data: the kinds `prepare` takes, except a series or a text corpus.
        spec: the training data's spec.
        target: the table column to predict; default the spec's.
        missing: "drop" rows with a missing cell, or "impute" them with the
            training sample's medians (text: the category "missing").

    Returns:
        `(features, labels)`: features as `model_inputs` gives them; labels as
        in training (class ids, 0/1 for binary, values in the target's units).

    Raises:
        ValueError: a column the model needs is lacking, a class was never seen
            in training, examples have another shape.

    Example:
        >>> spec = prepare("penguins").spec
        >>> x, y = prepare_like(datasets.load("penguins").head(10), spec)  # 3 rows lack cells
        >>> x["island"].shape, y[:3].tolist()
        ((7, 1), [0, 0, 0])
    """
    check_choice("missing", missing, MISSING_POLICIES)
    if spec.kind == "tensor":
        return validation_arrays(data, spec.input_shape, spec.task, spec.class_names, "data")
    if spec.kind != "table":
        raise ValueError(f"prepare_like reads tables and (X, y) data; this spec's data is "
                         f"{spec.kind!r}")
    _, frame, _ = load(data, "data")
    if not isinstance(frame, pd.DataFrame):
        raise ValueError("data for a table model must be a DataFrame, a CSV path or a bundled "
                         f"table's name; got {type(frame).__name__}")
    o = Options(target or spec.target, spec.task, 0.0, 0, missing, {}, None, None)
    lacking = [c for c in (*spec.columns, o.target) if c not in frame.columns]
    if lacking:
        raise ValueError(f"data lacks the column(s) {', '.join(map(repr, lacking))}; the model "
                         f"takes {', '.join(map(str, spec.columns))} and predicts {o.target!r}")
    kinds = _kinds(spec)
    numeric_classes = spec.class_names is None or all(
        to_number(name) is not None for name in spec.class_names)
    kinds[o.target] = "numeric" if numeric_classes else "categorical"
    features, labels = read_like(frame, o, kinds, spec.task, spec.class_names, [], "data")
    return _filled(features, spec), labels


def read_features(features: Any, spec: DataSpec, *, missing: str = "drop") -> dict[str, Any]:
    """A table's rows read as the training rows were, one model input row per row given.

    Cells are parsed with the training column kinds (`'2,100'` is a number,
    `'?'` a missing cell). Missing cells are filled as training filled them
    (`missing="impute"`: the training sample's median, text "missing"); under
    `missing="drop"` the model never saw such rows, so they are refused.

    Args:
        features: a DataFrame, a dict of column values, a list of row dicts (the
            server's "instances") or a CSV path; extra columns are ignored.
        spec: the training data's spec (a table's).
        missing: the run's policy.

    Raises:
        ValueError: a column the model needs is lacking, or (`"drop"`) rows have
            missing cells; the message names up to 5 rows and their columns.

    Example:
        >>> spec = prepare(pd.DataFrame({"mass": [3.0] * 10, "y": [0, 1] * 5}),
        ...                target="y").spec
        >>> read_features({"mass": ["3,700", "?"]}, spec, missing="impute")["mass"].tolist()
        [[3700.0], [3.0]]
    """
    check_choice("missing", missing, MISSING_POLICIES)
    features = _table(features)
    lacking = [c for c in spec.columns if c not in features]
    if lacking:
        raise ValueError(f"features lack the column(s) {', '.join(map(repr, lacking))}; "
                         f"the model takes: {', '.join(spec.columns)}")
    index = features.index if isinstance(features, pd.DataFrame) else None
    kinds = _kinds(spec)
    frame = pd.DataFrame({
        c: read_column(pd.Series(np.asarray(features[c], dtype=object).reshape(-1), index=index),
                       kinds[c], f"column {c!r}", "", [])[0]
        for c in spec.columns
    }, index=index)
    if missing == "drop":
        _refuse_gaps(frame)
    return _filled(frame, spec)


def _table(features: Any) -> Any:
    """Rows given as a list of dicts or a CSV path, as a DataFrame; others as they are."""
    if isinstance(features, (list, tuple)) and features and all(
            isinstance(row, dict) for row in features):
        return pd.DataFrame(list(features))
    if isinstance(features, (str, os.PathLike)):
        features = load(features, "features")[1]
        if not isinstance(features, pd.DataFrame):
            raise ValueError("features: that bundled dataset is not a table")
        return features
    if not hasattr(features, "__getitem__") or isinstance(features, (str, bytes, np.ndarray)):
        raise ValueError(
            "features for a table's model must be a DataFrame, a dict of column values, a "
            f"list of row dicts or a CSV path; got {type(features).__name__}")
    return features


def _kinds(spec: DataSpec) -> dict[str, str]:
    kinds = {c: "numeric" for c in spec.numeric_columns}
    return kinds | {c: "categorical" for c in spec.string_columns}


def _refuse_gaps(frame: pd.DataFrame) -> None:
    """Refuse rows with missing cells, naming up to 5 of them and their columns."""
    gaps = frame.isna()
    if not gaps.to_numpy().any():
        return
    rows = gaps[gaps.any(axis=1)]
    named = "; ".join(f"row {label!r}: {', '.join(gaps.columns[row.to_numpy()])}"
                      for label, row in list(rows.iterrows())[:5])
    more = f" (and {len(rows) - 5} more rows)" if len(rows) > 5 else ""
    raise ValueError(
        f"{len(rows)} of {len(frame)} rows have missing cells, which this run dropped from "
        f"its training data (missing='drop'): {named}{more}; fill them, leave those rows "
        "out, or train with missing='impute'"
    )


def _filled(frame: pd.DataFrame, spec: DataSpec) -> dict[str, np.ndarray]:
    """Model inputs with gaps filled as training filled them: medians, text 'missing'."""
    fill = {c: median(pd.Series(spec.sample[c].ravel())) for c in spec.numeric_columns}
    frame = frame.fillna(fill | {c: "missing" for c in spec.string_columns})
    return columns(frame, spec.numeric_columns, spec.string_columns)


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
