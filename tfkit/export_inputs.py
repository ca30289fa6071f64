"""What an exported model takes: its inputs as signature columns, and rows to verify it on."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from tfkit.data import DataSpec

_EXAMPLE_ROWS = 4


@dataclasses.dataclass(frozen=True)
class Column:
    """One model input as the exported signatures see it."""

    name: str  # the key requests use: the dict key (the column as written) or the input's name
    dtype: tf.DType
    model_shape: tuple[int | None, ...]  # the Keras input's shape, batch dimension included
    keyed: bool  # one of a dict of table columns
    arg: str = ""  # the signature's argument name: a Python identifier and a graph op name

    @property
    def scalar(self) -> bool:
        """A ``(None, 1)`` (or ``(None,)``) table column, served as ``[None]``."""
        return self.keyed and self.model_shape in ((None, 1), (None,))

    @property
    def serving_shape(self) -> list[int | None]:
        return [None] if self.scalar else [None, *self.model_shape[1:]]

    def to_model(self, value: Any) -> Any:
        """A served value in the model's shape: ``[N]`` → ``[N, 1]`` for a ``(None, 1)`` column."""
        return tf.expand_dims(value, -1) if self.scalar and len(self.model_shape) == 2 else value


def model_columns(model: Any, example: Any, spec: DataSpec | None) -> tuple[list[Column], bool]:
    """The model's inputs, and whether it takes them as a dict keyed by column."""
    try:
        structure = _input_structure(model)
    except (AttributeError, ValueError) as exc:  # subclassed, or never built
        if spec is not None:
            return _with_args(*_columns_from_spec(spec))
        if example is not None:
            return _with_args(*_columns_from_example(example))
        raise ValueError(
            f"export needs the model's inputs, and {type(model).__name__} declares none "
            f"(a subclassed model, or one not built yet: {exc}); pass example= (a few rows: "
            "a dict of columns or an array) or spec= (the DataSpec, result.spec)"
        ) from None
    if isinstance(structure, Mapping):
        columns = [
            Column(str(name), tf.as_dtype(tensor.dtype), tuple(tensor.shape), keyed=True)
            for name, tensor in structure.items()
        ]
        return _with_args(columns, True)
    if isinstance(structure, (list, tuple)):
        if len(structure) != 1:
            raise ValueError("a model with several inputs must take them as a dict of columns")
        structure = structure[0]
    name = getattr(structure, "name", "") or ""
    if re.fullmatch(r"(keras_tensor(_\d+)?)?", name):  # unnamed: Keras counts its tensors
        name = "x"
    column = Column(name, tf.as_dtype(structure.dtype), tuple(structure.shape), keyed=False)
    return _with_args([column], False)


def _input_structure(model: Any) -> Any:
    """``model.input``; Keras 3.15's Sequential raises there even when built, so its ``inputs``."""
    try:
        return model.input
    except (AttributeError, ValueError):
        inputs = model.inputs
        if not inputs:
            raise
        return inputs


def _columns_from_spec(spec: DataSpec) -> tuple[list[Column], bool]:
    if spec.kind == "table":
        columns = [Column(c, tf.float32, (None, 1), keyed=True) for c in spec.numeric_columns]
        columns += [Column(c, tf.string, (None, 1), keyed=True) for c in spec.string_columns]
        return columns, True
    dtype = tf.int32 if spec.kind == "text" else tf.float32  # text: token ids
    return [Column("x", dtype, (None, *spec.input_shape), keyed=False)], False


def _columns_from_example(example: Any) -> tuple[list[Column], bool]:
    if isinstance(example, Mapping):
        columns = []
        for name, values in example.items():
            values = np.asarray(values)
            columns.append(Column(str(name), _dtype_of(values), (None, *values.shape[1:]), True))
        return columns, True
    values = np.asarray(example)
    return [Column("x", _dtype_of(values), (None, *values.shape[1:]), keyed=False)], False


def _dtype_of(values: np.ndarray) -> tf.DType:
    """What a request's JSON values become: text, float32 (as Keras computes) or the ints given."""
    if values.dtype.kind in "OUS":
        return tf.string
    if values.dtype.kind == "f":
        return tf.float32
    return tf.as_dtype(values.dtype)


def _with_args(columns: list[Column], keyed: bool) -> tuple[list[Column], bool]:
    """The columns with their signature argument names, unique, in the columns' order."""
    args = argument_names([c.name for c in columns])
    return [dataclasses.replace(c, arg=args[c.name]) for c in columns], keyed


def argument_names(names: Sequence[str]) -> dict[str, str]:
    """Python identifiers that are also graph op names, as TensorFlow's signatures need.

    Each is what TensorFlow makes of the name for a keyword argument (each
    character that is not a letter or digit becomes "_", and "arg_" goes before
    a leading non-letter), in ASCII: the keyword arguments that callers of
    ``tf.saved_model.load``'s signature pass ("Größe" becomes "Grosse"). A name
    already valid is kept; a clash gets "_2", "_3", ...
    """
    chosen = {n: n for n in names if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n)}
    taken = set(chosen.values())
    for name in names:
        if name in chosen:
            continue
        text = unicodedata.normalize("NFKD", name.replace("ß", "ss"))
        text = "".join("_" if not (ch.isascii() and ch.isalnum()) else ch
                       for ch in text if not unicodedata.combining(ch))
        base = text if text[:1].isalpha() else f"arg_{text}"
        arg, n = base, 2
        while arg in taken:
            arg, n = f"{base}_{n}", n + 1
        chosen[name] = arg
        taken.add(arg)
    return chosen


def first_output_shape(
    model: Any, columns: list[Column], keyed: bool, rows: dict[str, np.ndarray]
) -> tuple[int | None, ...]:
    """The model's first output shape; a model that declares none is run on ``rows``."""
    outputs = getattr(model, "outputs", None)
    if outputs:
        return tuple(outputs[0].shape)
    features = {c.name: c.to_model(tf.constant(rows[c.name])) for c in columns}
    answer = model(features if keyed else features[columns[0].name], training=False)
    first = next(iter(answer.values())) if isinstance(answer, Mapping) else tf.nest.flatten(
        answer)[0]
    return (None, *first.shape[1:])


def class_names_for(
    output_shape: tuple[int | None, ...], task: str | None, class_names: Sequence[str] | None
) -> list[str]:
    if task not in ("binary", "multiclass"):
        return []
    count = 2 if task == "binary" else output_shape[-1]
    if class_names is None:
        if count is None:
            raise ValueError("the number of classes is unknown; pass class_names")
        return [str(i) for i in range(count)]
    names = [str(n) for n in class_names]
    if count is not None and len(names) != count:
        raise ValueError(f"class_names has {len(names)} names, the model has {count} classes")
    return names


def example_rows(columns: list[Column], keyed: bool, example: Any) -> dict[str, np.ndarray]:
    """Example rows keyed by column, each in the serving signature's shape."""
    rng = np.random.default_rng(0)
    rows = {}
    for column in columns:
        if example is None:
            values = _synthesize(column, rng)
        else:
            values = example[column.name] if keyed else example
            values = np.asarray(values)
            if column.scalar:
                values = values.reshape(-1)
        if column.dtype == tf.string:
            values = np.asarray(values, dtype=object)
        else:
            values = values.astype(column.dtype.as_numpy_dtype)
        rows[column.name] = values
    return rows


def _synthesize(column: Column, rng: np.random.Generator) -> np.ndarray:
    shape = [_EXAMPLE_ROWS] + [d or 1 for d in column.serving_shape[1:]]
    if column.dtype == tf.string:
        return np.full(shape, "", dtype=object)  # lookups map it to their OOV index
    if column.dtype.is_integer:
        return rng.integers(0, 2, size=shape)
    return rng.normal(size=shape)
