"""Pieces the zoo's builders share: heads, input scaling, a learned position embedding."""

from __future__ import annotations

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


def head(spec: DataSpec, x: Any, scale: tuple[float, float] | None = None) -> Any:
    """The task's output layer; a regressor's output is scaled back to the label's units."""
    if spec.task == "multiclass":
        return keras.layers.Dense(spec.output_units, activation="softmax", name="probabilities")(x)
    if spec.task == "binary":
        return keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    if scale is None:
        return keras.layers.Dense(1, name="prediction")(x)
    mean, std = scale
    x = keras.layers.Dense(1, name="scaled_prediction")(x)
    return keras.layers.Rescaling(std, offset=mean, name="prediction")(x)


def sequence_inputs(spec: DataSpec, builder: str) -> tuple[Any, Any, tuple[float, float] | None]:
    """Inputs [N, T] (a series window) or [N, T, F], normalized to [N, T, F].

    A series brings the training part's mean and deviation (sequences.py);
    the model scales its inputs by them and its prediction back, so the
    exported model takes raw values and answers in the series' own units.
    Returns (inputs, features, label scale or None).
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
        scale = (mean, std) if spec.task == "regression" else None
        return inputs, keras.layers.Normalization(mean=mean, variance=std**2, name="normalize")(
            x), scale
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
