"""Pieces the zoo's builders share: heads, input scaling, a learned position embedding."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfkit.data import DataSpec


@keras.saving.register_keras_serializable(package="tfkit")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position: `x + table[:L]` for inputs [N, L, dim], L <= max_length.

    Attention alone cannot tell positions apart; this is GPT-2's answer.
    """

    def __init__(self, max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def build(self, input_shape) -> None:
        self.table = self.add_weight(
            shape=(self.max_length, input_shape[-1]), name="table",
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, x):
        length = keras.ops.shape(x)[1]
        return x + keras.ops.cast(self.table[:length], x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_length": self.max_length}


@keras.saving.register_keras_serializable(package="tfkit")
class SquareRoot(keras.layers.Layer):
    """`sqrt(x)`: counts on a scale where their noise is about the same at any level."""

    def call(self, x):
        return keras.ops.sqrt(keras.ops.relu(x))


@keras.saving.register_keras_serializable(package="tfkit")
class Square(keras.layers.Layer):
    """`max(x, 0)**2`: back from the square-root scale; a count is never negative."""

    def call(self, x):
        return keras.ops.square(keras.ops.relu(x))


@keras.saving.register_keras_serializable(package="tfkit")
class LastValue(keras.layers.Layer):
    """`x[:, -1, :1]`: the last step's value of windows [N, T, F], as [N, 1]."""

    def call(self, x):
        return x[:, -1, :1]


@dataclasses.dataclass(frozen=True)
class SeriesScale:
    """How a series window reached the model, for the head to undo on its prediction."""

    mean: float
    std: float
    sqrt: bool  # the values were square-rooted first
    last: Any  # the window's last value, scaled: the head predicts the change from it


def head(spec: DataSpec, x: Any, scale: SeriesScale | None = None) -> Any:
    """The task's output layer; a forecaster's output is scaled back to the series' units.

    A forecaster predicts the change from the window's last value (scaled), so
    an untrained model starts at the "same as last step" forecast and learns
    what beats it; the change is added, then the scaling undone.
    """
    if spec.task == "multiclass":
        return keras.layers.Dense(spec.output_units, activation="softmax", name="probabilities")(x)
    if spec.task == "binary":
        return keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    if scale is None:
        return keras.layers.Dense(1, name="prediction")(x)
    x = keras.layers.Dense(1, name="scaled_change")(x)
    x = keras.layers.Add(name="scaled_prediction")([scale.last, x])
    if not scale.sqrt:
        return keras.layers.Rescaling(scale.std, offset=scale.mean, name="prediction")(x)
    x = keras.layers.Rescaling(scale.std, offset=scale.mean, name="sqrt_prediction")(x)
    return Square(name="prediction")(x)


def sequence_inputs(spec: DataSpec, builder: str) -> tuple[Any, Any, SeriesScale | None]:
    """Inputs [N, T] (a series window) or [N, T, F], normalized to [N, T, F].

    A series brings the training part's mean and deviation (sequences.py),
    of the square roots for a count series; the model takes square roots if
    so, scales its inputs, and undoes both on its prediction (`head`), so the
    exported model takes raw values and answers in the series' own units.
    Returns (inputs, features, the series' scale or None).
    """
    if spec.kind != "tensor" or len(spec.input_shape) not in (1, 2):
        raise ValueError(
            f"model {builder!r} needs sequences [T] (a series window) or [T, F], or text; got "
            f"input shape {spec.input_shape} ({spec.kind} data)"
        )
    inputs = keras.Input(shape=spec.input_shape, name="x")
    x = inputs if len(spec.input_shape) == 2 else keras.layers.Reshape((-1, 1))(inputs)
    if "mean" in spec.info:
        mean, std = spec.info["mean"], spec.info["std"]
        sqrt = spec.info.get("scale") == "sqrt"
        if sqrt:
            x = SquareRoot(name="sqrt")(x)
        x = keras.layers.Normalization(mean=mean, variance=std**2, name="normalize")(x)
        scale = None
        if spec.task == "regression":
            last = LastValue(name="last_value")(x)
            scale = SeriesScale(mean, std, sqrt, last)
        return inputs, x, scale
    sample = np.asarray(spec.sample, dtype=np.float64)
    sample = sample.reshape(-1, 1 if len(spec.input_shape) == 1 else spec.input_shape[-1])
    normalize = keras.layers.Normalization(
        mean=sample.mean(axis=0), variance=sample.var(axis=0) + 1e-12, name="normalize"
    )
    return inputs, normalize(x), None


def text_inputs(spec: DataSpec, dim: int) -> tuple[Any, Any]:
    """Character ids [N, L] (any L up to the context) embedded to [N, L, dim]."""
    inputs = keras.Input(shape=(None,), dtype="int32", name="ids")
    return inputs, keras.layers.Embedding(len(spec.info["vocabulary"]), dim, name="embed")(inputs)
