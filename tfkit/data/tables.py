"""A table as training data: its columns read, rows with gaps dropped or filled, the split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tfkit.config import COLUMN_TYPES
from tfkit.data.cells import read_column, read_target
from tfkit.data.messages import check_choice, closest, did_you_mean, warn
from tfkit.data.sources import load
from tfkit.data.spec import DataSpec, Options, PreparedData, in_memory, split
from tfkit.data.target import (
    class_weights,
    encode,
    infer_task,
    row_weights,
    target_scale,
    units,
)

DISTINCT_ROWS = 20  # rows a text column needs before a value per row is worth a warning


def prepare_table(frame: pd.DataFrame, name: str, o: Options, validation: Any) -> PreparedData:
    """A DataFrame's features and target, split (or with `validation`), as PreparedData."""
    check_table(frame, o)
    report: list[str] = []
    features, y, w, kinds = read_table(frame, o, report)
    if o.missing == "drop":
        features, y, w = drop_missing(features, y, w, report, "data")
    missing_note = count_missing(features)
    task, reason = infer_task(y, o.task, repr(o.target))
    labels, class_names = encode(y, task, f"target column {o.target!r}")
    weights = row_weights(w, class_weights(o.class_weight, task, class_names, o.target), labels)
    if validation is None:
        train_idx, val_idx = split(len(labels), o.validation_split, o.seed)
        train_f, val_f = features.iloc[train_idx], features.iloc[val_idx]
        train_y, val_y = labels[train_idx], labels[val_idx]
        weights = None if weights is None else weights[train_idx]
    else:
        train_f, train_y = features, labels
        kinds = {c: kinds[c] for c in (*features.columns, o.target)}  # empty ones left out
        val_f, val_y = _validation_table(validation, frame, o, kinds, task, class_names, report)
    numeric = tuple(c for c in features.columns if kinds[c] == "numeric")
    strings = tuple(c for c in features.columns if kinds[c] == "categorical")
    if o.missing == "impute":
        train_f, val_f = _impute(train_f, val_f, numeric, strings)
    if missing_note:
        report.append(f"imputed {missing_note} (numbers: the column's median in the training "
                      "rows; text: the category 'missing')")
    report.append(reason)
    train_x, val_x = columns(train_f, numeric, strings), columns(val_f, numeric, strings)
    spec = DataSpec(
        name=name, kind="table", task=task, input_shape=(), numeric_columns=numeric,
        string_columns=strings, class_names=class_names, output_units=units(task, class_names),
        sample=train_x, n_train=len(train_y), n_val=len(val_y), report=tuple(report),
        target=o.target, target_scale=target_scale(train_y, task),
    )
    return in_memory(spec, train_x, train_y, val_x, val_y, weights)


def _impute(train_f, val_f, numeric, strings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sides' gaps filled from the training rows only: validation must not leak in."""
    fill = {c: median(train_f[c]) for c in numeric} | {c: "missing" for c in strings}
    return train_f.fillna(fill), val_f.fillna(fill)


def check_table(frame: pd.DataFrame, o: Options) -> None:
    """Refuse an empty table, a missing target or weight column, and bad `column_types`."""
    columns = ", ".join(map(str, frame.columns))
    if frame.empty:
        raise ValueError("data is empty: the table has no rows")
    if o.target is None:
        raise ValueError(f"target is required for a table: the column to predict; "
                         f"the columns are: {columns}")
    for argument, column in (("target", o.target), ("sample_weight", o.sample_weight)):
        if column is not None and column not in frame.columns:
            raise ValueError(f"{argument}: no column {column!r}"
                             f"{did_you_mean(column, frame.columns)}; the columns are: {columns}")
    if o.sample_weight == o.target:
        raise ValueError(f"sample_weight={o.sample_weight!r} is the target; "
                         "name a column of per-row weights")
    features = [c for c in frame.columns if c not in (o.target, o.sample_weight)]
    if not features:
        others = f" and the sample_weight column {o.sample_weight!r}" if o.sample_weight else ""
        raise ValueError(f"the table has no feature columns: besides the target {o.target!r}"
                         f"{others} there is nothing to learn from; add columns that describe "
                         "each row")
    _check_column_types(frame, o, features)


def _check_column_types(frame: pd.DataFrame, o: Options, features: list) -> None:
    for column, kind in o.column_types.items():
        if column in (o.target, o.sample_weight):
            role = "the target" if column == o.target else "the sample_weight column"
            raise ValueError(f"column_types[{column!r}]: {column!r} is {role}, not a feature; "
                             "column_types sets feature columns (for the target, pass task=)")
        if column not in frame.columns:
            raise ValueError(f"column_types names {column!r}, which is not a column"
                             f"{did_you_mean(column, features)}; the feature columns are: "
                             f"{', '.join(map(str, features))}")
        check_choice(f"column_types[{column!r}]", kind, COLUMN_TYPES)


def read_table(frame, o: Options, report: list[str], kinds: dict | None = None,
               argument: str = "data"):
    """(features, y, w, kinds): cells read as numbers or text; rows with no target dropped.

    `kinds` (column -> "numeric" | "categorical") is guessed for the training
    table; another table (`argument`) is read with the training table's kinds.
    """
    training = kinds is None
    prefix = "" if training else f"{argument} "
    kinds = dict(kinds or {})
    read = {}
    for column in frame.columns:
        if column in (o.target, o.sample_weight) or not (training or column in kinds):
            continue
        kind = o.column_types.get(column) if training else kinds[column]
        hint = (f"pass column_types={{{column!r}: 'categorical'}} to keep it as text"
                if training else "")
        read[column], kinds[column] = read_column(
            frame[column], kind, f"{prefix}column {column!r}", hint, report)
    y, kinds[o.target] = read_target(frame[o.target], kinds.get(o.target),
                                     f"{prefix}target column {o.target!r}", report)
    w = _read_weights(frame, o, report) if o.sample_weight and training else None
    features = pd.DataFrame(read, index=frame.index)
    if y.isna().all():
        raise ValueError(f"{prefix}target column {o.target!r} has no values: all {len(y)} cells "
                         "are empty or not numbers")
    keep = y.notna()
    if not keep.all():
        report.append(f"{prefix}dropped {int((~keep).sum())} rows with no {o.target!r}")
    if w is not None and w[keep].isna().any():
        report.append(f"dropped {int(w[keep].isna().sum())} rows with no weight in "
                      f"{o.sample_weight!r}")
        keep &= w.notna()
    features, y, w = features[keep], y[keep], None if w is None else w[keep]
    if training:
        features = _drop_empty_columns(features, report)
        for column in features.columns:
            if kinds[column] == "categorical" and o.column_types.get(column) != "categorical":
                _warn_if_one_value_a_row(frame[column], features[column], column, report)
    return features, y.to_numpy(), None if w is None else w.to_numpy(np.float32), kinds


def _warn_if_one_value_a_row(given: pd.Series, text: pd.Series, column: str,
                             report: list[str]) -> None:
    """A text column with (nearly) a value per row, such as dates or ids, teaches nothing as
    categories: every value the model has not seen is unknown to it."""
    values = text.dropna()
    distinct = values.nunique()
    if len(values) < DISTINCT_ROWS or distinct <= len(values) // 2:
        return
    sample = values.astype(str).head(50)
    dates = pd.api.types.is_datetime64_any_dtype(given) or pd.to_datetime(
        sample, errors="coerce", format="mixed").notna().mean() > 0.9
    advice = ("they look like dates: turn them into numbers (e.g. the year, or days since "
              "a start) in a column of their own" if dates
              else "if it is an id or free text, drop it from the table")
    warn(f"column {column!r} has {distinct} distinct values in {len(values)} rows: as a "
         f"category, any value not seen in training is unknown to the model; {advice}", report)


def _read_weights(frame: pd.DataFrame, o: Options, report: list[str]) -> pd.Series:
    w, kind = read_column(frame[o.sample_weight], None, f"sample_weight column {o.sample_weight!r}",
                          "those rows are dropped", report)
    _check_weights(w, kind, o.sample_weight)
    return w


def _check_weights(w: pd.Series, kind: str, column: str) -> None:
    if kind != "numeric":
        example = w.dropna().iloc[0] if w.notna().any() else None
        raise ValueError(f"sample_weight column {column!r} must hold numbers >= 0; "
                         f"it holds text such as {example!r}")
    negative = w[w < 0]
    if len(negative):
        raise ValueError(f"sample_weight column {column!r} must hold numbers >= 0; "
                         f"{len(negative)} rows hold negative ones (e.g. {negative.iloc[0]:g})")


def _drop_empty_columns(features: pd.DataFrame, report: list[str]) -> pd.DataFrame:
    empty = [c for c in features.columns if features[c].isna().all()]
    for column in empty:
        warn(f"column {column!r} has no values and was left out", report)
    if len(empty) == len(features.columns):
        raise ValueError(f"the table has no feature columns with values: "
                         f"{', '.join(map(repr, empty))} are empty")
    return features.drop(columns=empty)


def drop_missing(features, y, w, report: list[str], argument: str):
    """The rows without a missing cell; refused when that leaves none."""
    gaps = features.isna()
    rows = gaps.any(axis=1).to_numpy()
    if not rows.any():
        return features, y, w
    if rows.all():
        counts = gaps.sum().sort_values(ascending=False, kind="stable")
        worst = ", ".join(f"{c!r} ({n} of {len(features)})"
                          for c, n in counts[counts > 0].head(3).items())
        raise ValueError(
            f"{argument}: every row has a missing cell, so missing='drop' leaves no rows; "
            f"the columns with the most missing cells: {worst}; pass missing='impute' to "
            "fill them (numbers: the median; text: 'missing') or leave those columns out"
        )
    prefix = "" if argument == "data" else f"{argument}: "
    report.append(f"{prefix}dropped {int(rows.sum())} rows with {int(gaps.to_numpy().sum())} "
                  "missing cells")
    keep = ~rows
    return features[keep], y[keep], None if w is None else w[keep]


def count_missing(features: pd.DataFrame) -> str:
    """'N missing cells in M rows', or '' when there are none."""
    gaps = features.isna()
    cells, rows = int(gaps.to_numpy().sum()), int(gaps.any(axis=1).sum())
    return f"{cells} missing cells in {rows} rows" if cells else ""


def median(column: pd.Series) -> float:
    """The column's median; 0 when it has no value at all."""
    value = column.median()
    return 0.0 if pd.isna(value) else float(value)  # no training value at all: 0


def columns(features: pd.DataFrame, numeric, strings) -> dict[str, np.ndarray]:
    """Model inputs: a [N, 1] float32 array per numeric column, object (str) per text one."""
    columns = {c: features[c].to_numpy(np.float32).reshape(-1, 1) for c in numeric}
    columns.update({c: features[c].astype(str).to_numpy(object).reshape(-1, 1) for c in strings})
    return columns


def _validation_table(validation, frame, o: Options, kinds, task, class_names, report):
    """Validation features and labels read with the training table's columns and classes."""
    _, validation, _ = load(validation, "validation_data")
    if not isinstance(validation, pd.DataFrame):
        raise ValueError("validation_data for a table must be a DataFrame, a CSV path or a "
                         f"bundled table's name; got {type(validation).__name__}")
    lacking = [c for c in frame.columns if c not in validation.columns and c != o.sample_weight]
    extra = [c for c in validation.columns if c not in frame.columns]
    if lacking or extra:
        parts = ([f"lacks {', '.join(map(repr, lacking))}"] if lacking else []) + (
            [f"has the extra {', '.join(map(repr, extra))}"] if extra else [])
        hints = [f"; {c!r}: did you mean {closest(c, lacking)!r}?"
                 for c in extra if closest(c, lacking)]
        raise ValueError(f"validation_data's columns differ from data's: it "
                         f"{' and '.join(parts)}{''.join(hints)}; data's columns are: "
                         f"{', '.join(map(str, frame.columns))}")
    return read_like(validation, o, kinds, task, class_names, report, "validation_data")


def read_like(frame, o: Options, kinds, task, class_names, report, argument: str):
    """Features and labels of another table, read with the training kinds and classes."""
    if frame.empty:
        raise ValueError(f"{argument} is empty: the table has no rows")
    features, y, _, _ = read_table(frame, o, report, kinds=kinds, argument=argument)
    if o.missing == "drop":
        features, y, _ = drop_missing(features, y, None, report, argument)
    labels, _ = encode(y, task, f"{argument}'s target column {o.target!r}", class_names)
    return features, labels
