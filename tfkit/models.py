"""Model builders: each makes a Keras model from a `DataSpec`.

A table model takes its raw named columns; normalization and string lookups
live inside the model, so the exported SavedModel takes raw values too.
Classifiers end in a softmax (or a sigmoid for two classes), regressors in one
linear unit.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from tfkit import zoo
from tfkit.data import DataSpec
from tfkit.zoo import flops_per_example  # noqa: F401  (tfkit.models.flops_per_example)

Builder = Callable[..., keras.Model]


def linear_regression(spec: DataSpec) -> keras.Model:
    """y = w·x + b: one Dense unit on the (normalized) inputs.

    Example:
        >>> from tfkit import data, datasets
        >>> spec = data.prepare(datasets.make_linear(100)).spec
        >>> linear_regression(spec).count_params()
        2
    """
    if spec.task != "regression":
        raise ValueError(
            f"model 'linear_regression' predicts a number, but the task is {spec.task!r}; "
            "use 'logistic_regression' for classes"
        )
    inputs, features = _inputs(spec, flatten=True)
    return functional(inputs, _head(spec, features), name="linear_regression")


def logistic_regression(spec: DataSpec) -> keras.Model:
    """Class probabilities from one linear layer and a sigmoid / softmax."""
    if spec.task == "regression":
        raise ValueError(
            "model 'logistic_regression' predicts classes, but the task is 'regression'; "
            "use 'linear_regression' or 'mlp'"
        )
    inputs, features = _inputs(spec, flatten=True)
    return functional(inputs, _head(spec, features), name="logistic_regression")


def mlp(
    spec: DataSpec, hidden: tuple[int, ...] = (64, 64), dropout: float = 0.0, l2: float = 0.0
) -> keras.Model:
    """A multi-layer perceptron: Dense + ReLU layers, then the task's head.

    Args:
        spec: the data spec.
        hidden: units of each hidden layer.
        dropout: dropout rate after each hidden layer.
        l2: L2 penalty on each hidden layer's kernel.
    """
    inputs, x = _inputs(spec, flatten=True)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"dense_{i}"
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return functional(inputs, _head(spec, x), name="mlp")


def cnn(
    spec: DataSpec, filters: tuple[int, ...] = (32, 64), dense: int = 64, dropout: float = 0.0
) -> keras.Model:
    """A small convolutional network for images [H, W, C].

    Two 3x3 conv + ReLU layers (each followed by 2x2 max-pooling while the
    image is larger than 4x4), then a Dense layer and the task's head.
    """
    if spec.kind != "tensor" or len(spec.input_shape) not in (2, 3):
        raise ValueError(
            f"model 'cnn' needs images [H, W] or [H, W, C]; got input shape {spec.input_shape} "
            f"({spec.kind} data); use 'mlp' for tables"
        )
    inputs = keras.Input(shape=spec.input_shape, name="x")
    x = inputs if len(spec.input_shape) == 3 else keras.layers.Reshape((*spec.input_shape, 1))(
        inputs
    )
    for i, n in enumerate(filters):
        x = keras.layers.Conv2D(n, 3, padding="same", activation="relu", name=f"conv_{i}")(x)
        if x.shape[1] > 4:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(spec, x), name="cnn")


BUILDERS: dict[str, Builder] = {
    "linear_regression": linear_regression,
    "logistic_regression": logistic_regression,
    "mlp": mlp,
    "cnn": cnn,
    **zoo.BUILDERS,  # resnet, lstm, gru, conv1d, transformer (tfkit/zoo/)
}


def available() -> list[str]:
    """Names accepted by `tfkit.train(model=...)`."""
    return sorted(BUILDERS)


def build(model: Any, spec: DataSpec, **kwargs: Any) -> keras.Model:
    """Make the model: a builder by name, a callable(spec), or a ready keras.Model.

    Raises:
        ValueError: unknown builder name, or a callable that returns no model.
    """
    if isinstance(model, keras.Model):
        return model
    if isinstance(model, str):
        if model not in BUILDERS:
            close = difflib.get_close_matches(model, available(), n=1)
            starting = [name for name in available() if model and name.startswith(model)]
            close = close or (starting if len(starting) == 1 else [])
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown model {model!r}; {hint}the builders are: {', '.join(available())}"
            )
        _check_kwargs(BUILDERS[model], repr(model), kwargs)
        return BUILDERS[model](spec, **kwargs)
    if callable(model):
        name = getattr(model, "__name__", None)
        _check_kwargs(model, repr(name) if name else "the model function", kwargs)
        built = model(spec, **kwargs)
        if not isinstance(built, keras.Model):
            raise ValueError(
                f"model callable must return a keras.Model; got {type(built).__name__}"
            )
        return built
    raise ValueError(
        f"model must be a builder name ({', '.join(available())}), a keras.Model or a "
        f"callable(spec) -> keras.Model; got {type(model).__name__}"
    )


def _check_kwargs(builder: Any, name: str, kwargs: dict) -> None:
    """Refuses model_kwargs the builder (`name`, as the message shows it) does not take,
    naming the ones it does."""
    try:
        parameters = list(inspect.signature(builder).parameters.values())[1:]  # after spec
    except (TypeError, ValueError):
        return  # no signature to read (a C function): the call itself will tell
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [key for key in kwargs if key not in takes]
    if unknown:
        close = [m for key in unknown for m in difflib.get_close_matches(key, takes, n=1)]
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ValueError(
            f"model_kwargs {', '.join(map(repr, unknown))}: {name} takes no such argument; "
            f"{hint}it takes: {', '.join(takes) or 'none'}"
        )


def table_inputs(spec: DataSpec) -> dict[str, keras.KerasTensor]:
    """One `keras.Input` of shape (1,) per table column, keyed by the column's own name.

    Column names are kept as the user wrote them ("Lot Area", "price/sqft",
    "größe"); only the Keras layer names are cleaned, since TensorFlow takes
    them as scope names. A name that is already valid is kept; others become
    readable ASCII ("Lot Area" -> "Lot_Area"), made unique with a suffix when
    two columns clean to the same text, and prefixed "column_" where a builder
    names its own layer so ("prediction").

    Args:
        spec: a table's data spec.

    Returns:
        The inputs in column order: numeric columns (float32), then string ones.

    Example:
        >>> import pandas as pd
        >>> from tfkit import data
        >>> frame = pd.DataFrame({"Lot Area": [1.0, 2.0, 3.0, 4.0], "y": [0.0, 1.0, 0.0, 1.0]})
        >>> spec = data.prepare(frame, target="y").spec
        >>> table_inputs(spec)["Lot Area"].name
        'Lot_Area'
    """
    names = _layer_names(spec.columns)
    dtypes = dict.fromkeys(spec.numeric_columns, "float32") | dict.fromkeys(
        spec.string_columns, "string"
    )
    return {c: keras.Input(shape=(1,), name=names[c], dtype=dtypes[c]) for c in spec.columns}


# A TensorFlow scope name without "/" (Keras splits names on it); no leading "."
# so that "." and ".." never name a directory-like scope.
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# Names the table builders give their own layers; a column named so ("prediction")
# becomes "column_prediction", as Keras refuses two layers of one name in a model.
_BUILDER_LAYER = re.compile(r"(normalize|lookup)_.*|dense_\d+|prediction|probability|probabilities")


def _layer_names(columns: tuple[str, ...]) -> dict[str, str]:
    """Valid, unique, readable layer names for the columns; valid ones unchanged."""
    names = {
        c: c for c in columns if _VALID_NAME.fullmatch(c) and not _BUILDER_LAYER.fullmatch(c)
    }
    taken = set(names.values())
    for position, column in enumerate(columns):
        if column in names:
            continue
        base = _clean(column) or f"column_{position}"
        if _BUILDER_LAYER.fullmatch(base):
            base = f"column_{base}"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        names[column] = name
        taken.add(name)
    return {c: names[c] for c in columns}


def _clean(name: str) -> str:
    """ASCII letters, digits, "_", "." and "-": accents dropped, anything else as "_"."""
    ascii_text = unicodedata.normalize("NFKD", name.replace("ß", "ss"))
    ascii_text = "".join(ch for ch in ascii_text if not unicodedata.combining(ch))
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", ascii_text).strip("_.-")


def _inputs(spec: DataSpec, flatten: bool) -> tuple[Any, Any]:
    """Model inputs and the normalized feature vector they feed."""
    if spec.kind == "tensor":
        x = inputs = keras.Input(shape=spec.input_shape, name="x")
        if flatten and len(spec.input_shape) > 1:
            x = keras.layers.Flatten()(x)
        sample = np.asarray(spec.sample).reshape(len(spec.sample), -1)
        mean, var = sample.mean(axis=0), sample.var(axis=0)
        return inputs, keras.layers.Normalization(mean=mean, variance=var, name="normalize")(x)
    inputs = table_inputs(spec)
    parts = []
    for column in spec.numeric_columns:
        values = spec.sample[column]
        layer = keras.layers.Normalization(
            mean=float(values.mean()),
            variance=float(values.var()),
            name=f"normalize_{inputs[column].name}",
        )
        parts.append(layer(inputs[column]))
    for column in spec.string_columns:
        vocabulary = sorted(set(spec.sample[column].ravel().tolist()))
        lookup = keras.layers.StringLookup(
            vocabulary=vocabulary, output_mode="one_hot", name=f"lookup_{inputs[column].name}"
        )
        parts.append(lookup(inputs[column]))
    features = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
    return inputs, features


def functional(inputs: Any, outputs: Any, name: str | None = None) -> keras.Model:
    """``keras.Model(inputs, outputs, name=name)``, quiet about inputs from `table_inputs`.

    Example:
        >>> import pandas as pd
        >>> from tfkit import data
        >>> frame = pd.DataFrame({"Lot Area": [1.0, 2.0, 3.0, 4.0], "y": [0.0, 1.0, 0.0, 1.0]})
        >>> inputs = table_inputs(data.prepare(frame, target="y").spec)
        >>> list(functional(inputs, keras.layers.Dense(1)(inputs["Lot Area"])).input)
        ['Lot Area']
    """
    with column_keyed_inputs():
        return keras.Model(inputs, outputs, name=name)


@contextlib.contextmanager
def column_keyed_inputs() -> Iterator[None]:
    """Keras's warning that an inputs dict's keys differ from its tensors' names, off.

    The keys of `table_inputs` are the user's column names ("Lot Area"), which
    TensorFlow does not take as layer names ("Lot_Area"), so they differ on
    purpose; Keras warns each time such a model is made, cloned or loaded.

    Example:
        >>> with column_keyed_inputs():  # doctest: +SKIP
        ...     model = keras.saving.load_model("house.keras")
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        yield


def _head(spec: DataSpec, x: Any) -> Any:
    """The task's output layer, in float32 even under a mixed-precision policy."""
    if spec.task == "multiclass":
        return keras.layers.Dense(
            spec.output_units, activation="softmax", name="probabilities", dtype="float32"
        )(x)
    if spec.task == "binary":
        return keras.layers.Dense(1, activation="sigmoid", name="probability", dtype="float32")(x)
    return keras.layers.Dense(1, name="prediction", dtype="float32")(x)
