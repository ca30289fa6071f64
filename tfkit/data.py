"""Turn what the user hands `train(data=...)` into a data spec and tf.data pipelines."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import math
import os
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfkit import datasets
from tfkit.config import COLUMN_TYPES, MISSING_POLICIES, TASKS

log = logging.getLogger(__name__)

MAX_CLASSES_FOR_INTEGER_TARGET = 32  # more distinct integers than this reads as a quantity
# Whole numbers read as class ids only inside -1..100: people number classes 0..C-1,
# 1..C or -1/+1. A price rounded to 50k or a year has few distinct values too, but
# values in the thousands are quantities, and a classifier over them would be wrong.
CLASS_ID_RANGE = (-1, 100)
# A text column is read as numbers when at least this share of its cells (not
# counting empty ones or markers such as 'N/A') are numbers: a few junk cells must
# not turn a numeric column into thousands of categories.
NUMERIC_SHARE = 0.8
MISSING_MARKERS = frozenset(  # compared stripped and lower-cased
    {"", "?", "-", "--", "---", ".", "na", "n/a", "#n/a", "nan", "null", "none", "missing"}
)
_CURRENCY = "$€£¥"
_THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+(\.\d*)?")
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep  # warnings point outside it
_PEEK = 10_000  # rows read from a streamed dataset to infer the task and adapt layers


class DataWarning(UserWarning):
    """tfkit changed the user's data: cells read as missing, a column left out.

    The same line is in `DataSpec.report`. To silence it:
    `warnings.simplefilter("ignore", tfkit.DataWarning)`.
    """


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
    def notes(self) -> tuple[str, ...]:
        """The report's lines that were not already shown as a `DataWarning`."""
        return tuple(line for line in self.report if not isinstance(line, _Warned))

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
class _Options:
    target: str | None
    task: str
    validation_split: float
    seed: int
    missing: str
    column_types: dict
    sample_weight: str | None
    class_weight: dict | None


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
    from tfkit import sequences, text  # they build on this module

    _check_choice("task", task, TASKS)
    _check_choice("missing", missing, MISSING_POLICIES)
    if sequences.is_series(data) or text.is_corpus(data):
        given = [name for name, value in (
            ("column_types", column_types), ("validation_data", validation_data),
            ("sample_weight", sample_weight), ("class_weight", class_weight)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} apply to tables, arrays and datasets, "
                             "not to a series or a text corpus")
        if sequences.is_series(data):
            return sequences.prepare_series(data, window=window,
                                            validation_split=validation_split)
        return text.prepare_text(data, context=window, validation_split=validation_split,
                                 seed=seed)
    name, data, default_target = _load(data, "data")
    options = _Options(target or default_target, task, validation_split, seed, missing,
                       dict(column_types or {}), sample_weight, class_weight)
    if isinstance(data, pd.DataFrame):
        return _prepare_table(data, name, options, validation_data)
    for argument in ("column_types", "sample_weight"):
        if getattr(options, argument):
            raise ValueError(f"{argument} names table columns, but data is "
                             f"{type(data).__name__}; pass a DataFrame or a CSV path")
    if isinstance(data, tf.data.Dataset):
        return _prepare_dataset(data, options, validation_data)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(part) for part in data)
        return _prepare_arrays(x, y, name, options, validation_data)
    raise ValueError(
        "data must be a bundled dataset name, a pandas DataFrame, a CSV path, "
        f"an (X, y) tuple or a tf.data.Dataset; got {type(data).__name__}"
    )


def _load(data: Any, argument: str) -> tuple[str, Any, str | None]:
    """(name, data, default target): a bundled name or a CSV path read; others as given."""
    if isinstance(data, str) and data in datasets.BUNDLED:
        return data, datasets.load(data), datasets.default_target(data)
    if isinstance(data, (str, os.PathLike)):
        if not os.path.exists(data):
            raise ValueError(
                f"{argument} {str(data)!r} is neither a bundled dataset "
                f"({', '.join(datasets.available())}) nor an existing CSV file"
                f"{_did_you_mean(os.path.basename(str(data)), datasets.available())}"
            )
        return os.path.splitext(os.path.basename(str(data)))[0], pd.read_csv(data), None
    return "data", data, None


# ---- tables -----------------------------------------------------------------------------


def _prepare_table(frame: pd.DataFrame, name: str, o: _Options, validation: Any) -> PreparedData:
    _check_table(frame, o)
    report: list[str] = []
    features, y, w, kinds = _read_table(frame, o, report)
    if o.missing == "drop":
        features, y, w = _drop_missing(features, y, w, report, "data")
    missing_note = _count_missing(features)
    task, reason = _infer_task(y, o.task, repr(o.target))
    labels, class_names = _encode(y, task, f"target column {o.target!r}")
    per_class = _class_weights(o.class_weight, task, class_names, o.target)
    weights = _row_weights(w, per_class, labels)
    if validation is None:
        train_idx, val_idx = _split(len(labels), o.validation_split, o.seed)
        train_f, val_f = features.iloc[train_idx], features.iloc[val_idx]
        train_y, val_y = labels[train_idx], labels[val_idx]
        weights = None if weights is None else weights[train_idx]
    else:
        train_f, train_y = features, labels
        kinds = {c: kinds[c] for c in (*features.columns, o.target)}  # empty ones left out
        val_f, val_y = _validation_table(validation, frame, o, kinds, task, class_names, report)
    numeric = tuple(c for c in features.columns if kinds[c] == "numeric")
    strings = tuple(c for c in features.columns if kinds[c] == "categorical")
    if o.missing == "impute":  # from the training rows only: validation must not leak in
        fill = {c: _median(train_f[c]) for c in numeric} | {c: "missing" for c in strings}
        train_f, val_f = train_f.fillna(fill), val_f.fillna(fill)
    if missing_note:
        report.append(f"imputed {missing_note} (numbers: the column's median in the training "
                      "rows; text: the category 'missing')")
    report.append(reason)
    train_x, val_x = _columns(train_f, numeric, strings), _columns(val_f, numeric, strings)
    spec = DataSpec(
        name=name, kind="table", task=task, input_shape=(), numeric_columns=numeric,
        string_columns=strings, class_names=class_names, output_units=_units(task, class_names),
        sample=train_x, n_train=len(train_y), n_val=len(val_y), report=tuple(report),
        target=o.target, target_scale=_target_scale(train_y, task),
    )
    return _in_memory(spec, train_x, train_y, val_x, val_y, weights)


def _check_table(frame: pd.DataFrame, o: _Options) -> None:
    columns = ", ".join(map(str, frame.columns))
    if frame.empty:
        raise ValueError("data is empty: the table has no rows")
    if o.target is None:
        raise ValueError(f"target is required for a table: the column to predict; "
                         f"the columns are: {columns}")
    for argument, column in (("target", o.target), ("sample_weight", o.sample_weight)):
        if column is not None and column not in frame.columns:
            raise ValueError(f"{argument}: no column {column!r}"
                             f"{_did_you_mean(column, frame.columns)}; the columns are: {columns}")
    if o.sample_weight == o.target:
        raise ValueError(f"sample_weight={o.sample_weight!r} is the target; "
                         "name a column of per-row weights")
    features = [c for c in frame.columns if c not in (o.target, o.sample_weight)]
    if not features:
        others = f" and the sample_weight column {o.sample_weight!r}" if o.sample_weight else ""
        raise ValueError(f"the table has no feature columns: besides the target {o.target!r}"
                         f"{others} there is nothing to learn from; add columns that describe "
                         "each row")
    for column, kind in o.column_types.items():
        if column in (o.target, o.sample_weight):
            role = "the target" if column == o.target else "the sample_weight column"
            raise ValueError(f"column_types[{column!r}]: {column!r} is {role}, not a feature; "
                             "column_types sets feature columns (for the target, pass task=)")
        if column not in frame.columns:
            raise ValueError(f"column_types names {column!r}, which is not a column"
                             f"{_did_you_mean(column, features)}; the feature columns are: "
                             f"{', '.join(map(str, features))}")
        _check_choice(f"column_types[{column!r}]", kind, COLUMN_TYPES)


def _read_table(frame, o: _Options, report: list[str], kinds: dict | None = None,
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
        read[column], kinds[column] = _read_column(
            frame[column], kind, f"{prefix}column {column!r}", hint, report)
    y, kinds[o.target] = _read_target(frame[o.target], kinds.get(o.target),
                                      f"{prefix}target column {o.target!r}", report)
    w = None
    if o.sample_weight and training:
        w, kind = _read_column(frame[o.sample_weight], None,
                               f"sample_weight column {o.sample_weight!r}",
                               "those rows are dropped", report)
        _check_weights(w, kind, o.sample_weight)
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
    return features, y.to_numpy(), None if w is None else w.to_numpy(np.float32), kinds


def _read_column(column: pd.Series, kind: str | None, label: str, hint: str,
                 report: list[str]) -> tuple[pd.Series, str]:
    """The column as float64 numbers or as text (object, NaN where missing), and its kind."""
    if kind == "categorical":
        return _as_text(column), kind
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64), "numeric"
    cells = column.to_numpy(dtype=object)
    present = ~pd.isna(cells)
    texts = [str(cell) for cell in cells[present]]
    numbers = {text: _to_number(text) for text in set(texts)}
    parsed = [numbers[text] for text in texts]
    countable = sum(text.strip().lower() not in MISSING_MARKERS for text in texts)
    found = sum(value is not None for value in parsed)
    if kind is None and countable and found < NUMERIC_SHARE * countable:
        return _as_text(column), "categorical"
    values = np.full(len(cells), np.nan)
    values[present] = [np.nan if value is None else value for value in parsed]
    junk = [text for text, value in zip(texts, parsed, strict=True) if value is None]
    if junk:
        examples = ", ".join(map(repr, list(dict.fromkeys(junk))[:3]))
        what = ("cells are not numbers and were" if len(junk) != 1
                else "cell is not a number and was")
        _warn(f"{label}: {len(junk)} {what} treated as missing ({examples})"
              f"{'; ' + hint if hint else ''}", report)
    written = [text for text, value in zip(texts, parsed, strict=True)
               if value is not None and not _is_plain_number(text)]
    if written:
        report.append(f"{label}: read {len(written)} cells written with currency signs, "
                      f"thousands separators or percent signs as numbers (e.g. {written[0]!r} "
                      f"as {numbers[written[0]]:,.10g}"
                      + ("; '12%' reads as 12)" if any("%" in t for t in written) else ")"))
    return pd.Series(values, index=column.index), "numeric"


def _read_target(column: pd.Series, kind: str | None, label: str,
                 report: list[str]) -> tuple[pd.Series, str]:
    """The target read as a feature is, except that true/false stays text and a '?' is
    no class: classes are named as the user wrote them, and a row without one is dropped."""
    hint = "those rows have no target and are dropped"
    if kind is None and pd.api.types.is_bool_dtype(column):
        return _as_text(column), "categorical"
    y, kind = _read_column(column, kind, label, hint, report)
    if kind == "categorical":
        marked = y.notna() & y.astype(str).str.strip().str.lower().isin(MISSING_MARKERS)
        if marked.any():
            examples = ", ".join(map(repr, list(dict.fromkeys(y[marked]))[:3]))
            _warn(f"{label}: {int(marked.sum())} cells mark a missing value ({examples}) and "
                  f"are not a class; {hint}", report)
            y = y.where(~marked, np.nan)
        spellings = pd.Series(y.dropna().unique(), dtype=object)
        groups = spellings.groupby(spellings.str.lower()).agg(list)
        alike = [names for names in groups if len(names) > 1]
        if alike:
            shown = "; ".join("/".join(map(repr, sorted(names))) for names in alike[:3])
            _warn(f"{label}: classes differ only in upper/lower case ({shown}) and are kept "
                  "apart; write them one way if they are the same class", report)
    return y, kind


def _to_number(text: str) -> float | None:
    """The number a cell spells, allowing ' 12 ', '1,500', '$1,200', '-$5' and '12%'."""
    rest, sign = text.strip(), ""
    if rest.startswith(("-", "+")):
        sign, rest = rest[0], rest[1:].lstrip()
    if rest[:1] and rest[0] in _CURRENCY:
        rest = rest[1:].lstrip()
    if not sign and rest.startswith(("-", "+")):  # "$-5"
        sign, rest = rest[0], rest[1:]
    if rest.endswith("%"):
        rest = rest[:-1].rstrip()
    if _THOUSANDS.fullmatch(rest):
        rest = rest.replace(",", "")
    if not rest or not (rest[0].isdigit() or rest[0] == "."):  # float() also reads 'inf'
        return None
    try:
        value = float(sign + rest)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_plain_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_text(column: pd.Series) -> pd.Series:
    """Text cells as written; numbers without a spurious '.0'; missing stays NaN."""
    def text(cell: Any) -> Any:
        if pd.isna(cell):
            return np.nan
        if isinstance(cell, (float, np.floating)) and float(cell).is_integer():
            return str(int(cell))
        return str(cell).strip()  # "no " is "no": spaces around a cell are never meant

    return pd.Series([text(cell) for cell in column.to_numpy(dtype=object)],
                     index=column.index, dtype=object)


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
        _warn(f"column {column!r} has no values and was left out", report)
    if len(empty) == len(features.columns):
        raise ValueError(f"the table has no feature columns with values: "
                         f"{', '.join(map(repr, empty))} are empty")
    return features.drop(columns=empty)


def _drop_missing(features, y, w, report: list[str], argument: str):
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


def _count_missing(features: pd.DataFrame) -> str:
    gaps = features.isna()
    cells, rows = int(gaps.to_numpy().sum()), int(gaps.any(axis=1).sum())
    return f"{cells} missing cells in {rows} rows" if cells else ""


def _median(column: pd.Series) -> float:
    median = column.median()
    return 0.0 if pd.isna(median) else float(median)  # no training value at all: 0


def _columns(features: pd.DataFrame, numeric, strings) -> dict[str, np.ndarray]:
    columns = {c: features[c].to_numpy(np.float32).reshape(-1, 1) for c in numeric}
    columns.update({c: features[c].astype(str).to_numpy(object).reshape(-1, 1) for c in strings})
    return columns


def _validation_table(validation, frame, o: _Options, kinds, task, class_names, report):
    """Validation features and labels read with the training table's columns and classes."""
    _, validation, _ = _load(validation, "validation_data")
    if not isinstance(validation, pd.DataFrame):
        raise ValueError("validation_data for a table must be a DataFrame, a CSV path or a "
                         f"bundled table's name; got {type(validation).__name__}")
    lacking = [c for c in frame.columns if c not in validation.columns and c != o.sample_weight]
    extra = [c for c in validation.columns if c not in frame.columns]
    if lacking or extra:
        parts = ([f"lacks {', '.join(map(repr, lacking))}"] if lacking else []) + (
            [f"has the extra {', '.join(map(repr, extra))}"] if extra else [])
        hints = [f"; {c!r}: did you mean {_closest(c, lacking)!r}?"
                 for c in extra if _closest(c, lacking)]
        raise ValueError(f"validation_data's columns differ from data's: it "
                         f"{' and '.join(parts)}{''.join(hints)}; data's columns are: "
                         f"{', '.join(map(str, frame.columns))}")
    return _read_like(validation, o, kinds, task, class_names, report, "validation_data")


def _read_like(frame, o: _Options, kinds, task, class_names, report, argument: str):
    """Features and labels of another table, read with the training kinds and classes."""
    if frame.empty:
        raise ValueError(f"{argument} is empty: the table has no rows")
    features, y, _, _ = _read_table(frame, o, report, kinds=kinds, argument=argument)
    if o.missing == "drop":
        features, y, _ = _drop_missing(features, y, None, report, argument)
    labels, _ = _encode(y, task, f"{argument}'s target column {o.target!r}", class_names)
    return features, labels


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
    _check_choice("missing", missing, MISSING_POLICIES)
    if spec.kind == "tensor":
        return _validation_arrays(data, spec.input_shape, spec.task, spec.class_names, "data")
    if spec.kind != "table":
        raise ValueError(f"prepare_like reads tables and (X, y) data; this spec's data is "
                         f"{spec.kind!r}")
    _, frame, _ = _load(data, "data")
    if not isinstance(frame, pd.DataFrame):
        raise ValueError("data for a table model must be a DataFrame, a CSV path or a bundled "
                         f"table's name; got {type(frame).__name__}")
    o = _Options(target or spec.target, spec.task, 0.0, 0, missing, {}, None, None)
    lacking = [c for c in (*spec.columns, o.target) if c not in frame.columns]
    if lacking:
        raise ValueError(f"data lacks the column(s) {', '.join(map(repr, lacking))}; the model "
                         f"takes {', '.join(map(str, spec.columns))} and predicts {o.target!r}")
    kinds = {c: "numeric" for c in spec.numeric_columns}
    kinds |= {c: "categorical" for c in spec.string_columns}
    numeric_classes = spec.class_names is None or all(
        _to_number(name) is not None for name in spec.class_names)
    kinds[o.target] = "numeric" if numeric_classes else "categorical"
    features, labels = _read_like(frame, o, kinds, spec.task, spec.class_names, [], "data")
    fill = {c: _median(pd.Series(spec.sample[c].ravel())) for c in spec.numeric_columns}
    features = features.fillna(fill | {c: "missing" for c in spec.string_columns})
    return _columns(features, spec.numeric_columns, spec.string_columns), labels


def read_features(features: Any, spec: DataSpec, *, missing: str = "drop") -> dict[str, Any]:
    """A table's rows read as the training rows were, one model input row per row given.

    Cells are parsed with the training column kinds (`'2,100'` is a number,
    `'?'` a missing cell). Missing cells are filled as training filled them
    (`missing="impute"`: the training sample's median, text "missing"); under
    `missing="drop"` the model never saw such rows, so they are refused.

    Args:
        features: a DataFrame or a dict of column values; extra columns are ignored.
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
    _check_choice("missing", missing, MISSING_POLICIES)
    lacking = [c for c in spec.columns if c not in features]
    if lacking:
        raise ValueError(f"features lack the column(s) {', '.join(map(repr, lacking))}; "
                         f"the model takes: {', '.join(spec.columns)}")
    index = features.index if isinstance(features, pd.DataFrame) else None
    kinds = {c: "numeric" for c in spec.numeric_columns}
    kinds |= {c: "categorical" for c in spec.string_columns}
    frame = pd.DataFrame({
        c: _read_column(pd.Series(np.asarray(features[c], dtype=object).reshape(-1), index=index),
                        kinds[c], f"column {c!r}", "", [])[0]
        for c in spec.columns
    }, index=index)
    gaps = frame.isna()
    if missing == "drop" and gaps.to_numpy().any():
        rows = gaps[gaps.any(axis=1)]
        named = "; ".join(f"row {label!r}: {', '.join(gaps.columns[row.to_numpy()])}"
                          for label, row in list(rows.iterrows())[:5])
        more = f" (and {len(rows) - 5} more rows)" if len(rows) > 5 else ""
        raise ValueError(
            f"{len(rows)} of {len(frame)} rows have missing cells, which this run dropped from "
            f"its training data (missing='drop'): {named}{more}; fill them, leave those rows "
            "out, or train with missing='impute'"
        )
    fill = {c: _median(pd.Series(spec.sample[c].ravel())) for c in spec.numeric_columns}
    frame = frame.fillna(fill | {c: "missing" for c in spec.string_columns})
    return _columns(frame, spec.numeric_columns, spec.string_columns)


# ---- arrays and datasets ----------------------------------------------------------------


def _prepare_arrays(x, y, name: str, o: _Options, validation: Any) -> PreparedData:
    x, y = _check_arrays(x, y, "data")
    task, reason = _infer_task(y, o.task, "y")
    labels, class_names = _encode(y, task, "y")
    per_class = _class_weights(o.class_weight, task, class_names, "y")
    if validation is None:
        train_idx, val_idx = _split(len(labels), o.validation_split, o.seed)
        train_x, train_y = x[train_idx], labels[train_idx]
        val_x, val_y = x[val_idx], labels[val_idx]
    else:
        train_x, train_y = x, labels
        val_x, val_y = _validation_arrays(validation, x.shape[1:], task, class_names)
    spec = DataSpec(
        name=name, kind="tensor", task=task, input_shape=tuple(x.shape[1:]),
        numeric_columns=(), string_columns=(), class_names=class_names,
        output_units=_units(task, class_names), sample=train_x[:_PEEK],
        n_train=len(train_y), n_val=len(val_y), report=(reason,),
        target_scale=_target_scale(train_y, task),
    )
    weights = _row_weights(None, per_class, train_y)
    return _in_memory(spec, train_x, train_y, val_x, val_y, weights)


def _check_arrays(x: np.ndarray, y: np.ndarray, argument: str) -> tuple[np.ndarray, np.ndarray]:
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
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{prefix}X holds {bad} NaN or infinite values; fill or drop them first")
    if np.issubdtype(y.dtype, np.number) and not np.all(np.isfinite(y.astype(np.float64))):
        raise ValueError(
            f"{prefix}y holds {int(np.count_nonzero(~np.isfinite(y.astype(np.float64))))} NaN "
            "or infinite labels; drop those rows first"
        )
    return x, y


def _validation_arrays(validation, input_shape, task, class_names,
                       argument: str = "validation_data"):
    """(X, y) or a dataset, in memory, labelled with the training classes."""
    _, validation, _ = _load(validation, argument)  # "digits" is (X, y) too
    if isinstance(validation, tf.data.Dataset):
        x, y = _dataset_arrays(validation, argument)
    elif isinstance(validation, (tuple, list)) and len(validation) == 2:
        x, y = (np.asarray(part) for part in validation)
    else:
        raise ValueError(f"{argument} must be the same kind as the training data: an (X, y) "
                         f"tuple or a tf.data.Dataset; got {type(validation).__name__}")
    x, y = _check_arrays(x, y, argument)
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{argument}: X's examples have shape {tuple(x.shape[1:])}; "
                         f"the training data's have {tuple(input_shape)}")
    labels, _ = _encode(y, task, f"{argument}'s y", class_names)
    return x, labels


def _unbatched_pairs(ds: tf.data.Dataset, argument: str) -> tf.data.Dataset:
    if not (isinstance(ds.element_spec, tuple) and len(ds.element_spec) == 2):
        raise ValueError(
            f"a tf.data.Dataset must yield (features, label) pairs; {argument} yields "
            f"{ds.element_spec}"
        )
    if isinstance(ds.element_spec[0], dict):
        raise ValueError("a tf.data.Dataset of dict features is not supported; pass a DataFrame")
    if ds.element_spec[1].shape.rank and ds.element_spec[1].shape[0] is None:
        ds = ds.unbatch()  # batched input: tfkit batches by the global batch size itself
    return ds


def _dataset_arrays(ds: tf.data.Dataset, argument: str) -> tuple[np.ndarray, np.ndarray]:
    parts = list(_unbatched_pairs(ds, argument).batch(4096).as_numpy_iterator())
    if not parts:
        raise ValueError(f"{argument} is empty: the tf.data.Dataset yields no elements")
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(2))


def _prepare_dataset(ds: tf.data.Dataset, o: _Options, validation: Any) -> PreparedData:
    ds = _unbatched_pairs(ds, "data")
    n = int(ds.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError("data: an infinite tf.data.Dataset has no epochs; use .take(n) first")
    if n < 0:
        n = int(ds.reduce(0, lambda count, _: count + 1))
    if n == 0:
        raise ValueError("data is empty: the tf.data.Dataset yields no elements")
    x_peek, y_peek = next(iter(ds.batch(min(n, _PEEK))))
    task, reason = _infer_task(y_peek.numpy(), o.task, "the labels")
    _, class_names = _encode(y_peek.numpy(), task, "the labels")
    if class_names is not None and class_names != tuple(str(i) for i in range(len(class_names))):
        raise ValueError(
            "labels of a tf.data.Dataset must be integer class ids 0..C-1; "
            f"got the values {', '.join(class_names[:10])}"
        )
    per_class = _class_weights(o.class_weight, task, class_names, "the labels")
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
        val_arrays = _validation_arrays(validation, x_peek.shape[1:], task, class_names)
        n, n_val = n + len(val_arrays[1]), len(val_arrays[1])
        val = tf.data.Dataset.from_tensor_slices(val_arrays)
    if per_class is not None:
        table = tf.constant(per_class)
        train = train.map(lambda x, y: (x, y, tf.gather(table, tf.cast(y, tf.int64))))
    peek_scale = _target_scale(y_peek.numpy().astype(np.float32), task)
    spec = DataSpec(
        name="dataset", kind="tensor", task=task, input_shape=tuple(x_peek.shape[1:]),
        numeric_columns=(), string_columns=(), class_names=class_names,
        output_units=_units(task, class_names), sample=x_peek.numpy(),
        n_train=n - n_val, n_val=n_val, report=(reason,),
        target_scale=peek_scale,
    )
    return PreparedData(spec, train, val, val_arrays)


# ---- the target: task, labels, scale and weights ------------------------------------------


def _infer_task(y: np.ndarray, task: str, what: str) -> tuple[str, str]:
    """The task and the report's line saying why, and how to override it."""
    numeric = _is_numeric(y)
    if not numeric:
        classes = np.unique(y.astype(str))
    else:
        classes = np.unique(y.astype(np.float64))
    if task != "auto":
        return task, f"task: {task} (as given) — {what} has {len(classes)} distinct values"
    names = _list(_class_name(c) for c in classes) if numeric else _list(classes)
    if not numeric:
        task = "binary" if len(classes) == 2 else "multiclass"
        other = "multiclass" if task == "binary" else ""
        return task, (f"task: {task} — {what} is text with {len(classes)} classes ({names})"
                      + (f"; pass task='{other}' for a softmax over them" if other else ""))
    low, high = CLASS_ID_RANGE
    whole = bool(np.all(np.mod(classes, 1) == 0))
    if whole and low <= classes[0] and classes[-1] <= high and (
            len(classes) <= MAX_CLASSES_FOR_INTEGER_TARGET):
        task = "binary" if len(classes) == 2 else "multiclass"
        return task, (f"task: {task} — {what} holds {len(classes)} whole numbers ({names}), "
                      "read as class ids; pass task='regression' to predict them as quantities")
    if not whole:
        why = ", not all whole"
    elif len(classes) > MAX_CLASSES_FOR_INTEGER_TARGET:
        why = f", more than {MAX_CLASSES_FOR_INTEGER_TARGET} to be classes"
    else:
        why = (f", whole but from {_class_name(classes[0])} to {_class_name(classes[-1])}, "
               f"outside the class ids {low}..{high}")
    return "regression", (f"task: regression — {what} has {len(classes)} distinct numbers{why}; "
                          "pass task='multiclass' to treat them as classes")


def _encode(y: np.ndarray, task: str, what: str, class_names: tuple[str, ...] | None = None):
    """(labels, class_names): int64 class ids (float32 0/1 for binary) or float32 values.

    Given `class_names` (the training classes), labels are ids into them and a
    class not among them is an error.
    """
    numeric = _is_numeric(y)
    if task == "regression":
        if not numeric:
            raise ValueError(
                f"{what} holds text labels (e.g. {y[0]!r}) but task='regression' needs numbers; "
                "use task='multiclass' or 'binary', or a numeric target"
            )
        return y.astype(np.float32), None
    if numeric:  # sorted by value, so ids follow the numbers (2 before 10)
        classes, labels = np.unique(y.astype(np.float64), return_inverse=True)
        names = tuple(_class_name(c) for c in classes)
    else:
        classes, labels = np.unique(y.astype(str), return_inverse=True)
        names = tuple(str(c) for c in classes)
    if class_names is not None:
        unseen = [n for n in names if n not in class_names]
        if unseen:
            raise ValueError(f"{what} holds the class(es) {_list(unseen)} never seen in "
                             f"training; the training classes are: {_list(class_names, 20)}")
        index = {n: i for i, n in enumerate(class_names)}
        labels = np.array([index[names[i]] for i in labels], dtype=np.int64)
        names = class_names
    elif task == "binary" and len(names) != 2:
        raise ValueError(f"task='binary' needs exactly 2 classes in {what}; found {len(names)}")
    elif len(names) < 2:
        raise ValueError(f"{what} has a single value ({names[0]!r}) in {len(y)} rows; there is "
                         "nothing to learn: a classifier needs at least 2 classes")
    labels = np.asarray(labels).reshape(-1).astype(np.float32 if task == "binary" else np.int64)
    return labels, names


def _is_numeric(y: np.ndarray) -> bool:
    # bool labels are not: their classes are named 'False' and 'True', as the user wrote them
    return np.issubdtype(y.dtype, np.number)


def _class_name(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else str(value)  # repr: distinct stay distinct


def _list(names: Any, limit: int = 5) -> str:
    names = list(names)
    return ", ".join(map(str, names[:limit])) + (", …" if len(names) > limit else "")


def _target_scale(labels: np.ndarray, task: str) -> tuple[float, float] | None:
    if task != "regression":
        return None
    mean = float(np.mean(labels, dtype=np.float64))
    std = float(np.std(labels, dtype=np.float64))
    # A constant target (std 0), or a spread below float32's resolution of the mean,
    # would blow the scaled labels up: leave the scale alone then.
    return mean, std if std > 1e-6 * abs(mean) and std > 0 else 1.0


def _class_weights(class_weight, task, class_names, what) -> np.ndarray | None:
    """Weight per class id, from `{class name or id: weight}`; unnamed classes weigh 1."""
    if not class_weight:
        return None
    if task == "regression":
        raise ValueError(f"class_weight needs classes, but the task is regression ({what!r} is "
                         "a quantity); use sample_weight=<a column of per-row weights>, "
                         "or task='multiclass'")
    whole_names = all(re.fullmatch(r"-?\d+", name) for name in class_names)
    table = np.ones(len(class_names), np.float32)
    for key, weight in class_weight.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) or not (
                math.isfinite(weight) and weight >= 0):
            raise ValueError(f"class_weight[{key!r}] must be a number >= 0; got {weight!r}")
        table[_class_index(key, class_names, whole_names)] = weight
    return table


def _class_index(key: Any, class_names: tuple[str, ...], whole_names: bool) -> int:
    classes = f"the classes are: {_list(class_names, 20)}"
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and not whole_names:
        if 0 <= key < len(class_names):
            return int(key)
        raise ValueError(f"class_weight key {key!r} is not a class id (0..{len(class_names) - 1})"
                         f" nor a class name; {classes}")
    name = _class_name(key) if isinstance(key, (int, np.integer, float)) else str(key)
    if isinstance(key, (str, int, np.integer, float)) and name in class_names:
        return class_names.index(name)
    raise ValueError(f"class_weight has no class {key!r}{_did_you_mean(name, class_names)}; "
                     f"{classes}")


def _row_weights(w: np.ndarray | None, per_class: np.ndarray | None,
                 labels: np.ndarray) -> np.ndarray | None:
    """Per-row float32 weights: the row's sample weight times its class's weight."""
    if w is None and per_class is None:
        return None
    weights = np.ones(len(labels), np.float32) if w is None else w.astype(np.float32)
    if per_class is not None:
        weights = weights * per_class[labels.astype(np.int64)]
    return weights


def _units(task: str, class_names) -> int:
    return len(class_names) if task == "multiclass" else 1


def _split(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Shuffle before splitting: bundled tables are sorted by class.
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_split))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _in_memory(spec, train_x, train_y, val_x, val_y, train_w=None) -> PreparedData:
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


# ---- messages ---------------------------------------------------------------------------


class _Warned(str):
    """A report line that was also issued as a `DataWarning` (so it is shown once)."""


def _warn(line: str, report: list[str]) -> None:
    report.append(_Warned(line))
    # Point the warning at the user's line that called tfkit, not at this module.
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(line, DataWarning, stacklevel=level)


def _closest(word: Any, choices: Any) -> str | None:
    """The near miss of `word` among `choices` (case aside), or None."""
    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _did_you_mean(word: Any, choices: Any) -> str:
    """' (did you mean 'price'?)' for a near miss among `choices`, else ''."""
    close = _closest(word, choices)
    return f" (did you mean {close!r}?)" if close else ""


def _check_choice(argument: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, allowed))}; got "
                         f"{value!r}{_did_you_mean(value, allowed)}")

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
