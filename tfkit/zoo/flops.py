"""Count a model's forward-pass FLOPs per example, analytically, layer by layer."""

from __future__ import annotations

import math
from typing import Any

import keras

from tfkit import _compat


def flops_per_example(model: keras.Model, sequence_length: int | None = None) -> int:
    """Forward-pass floating-point operations for one example (2 per multiply-add).

    Counted: Dense, Conv1D/2D (any stride, dilation, groups), LSTM, GRU,
    SimpleRNN and MultiHeadAttention (its four projections plus the T x T
    scores and weighted sum, the full square although a causal mask zeroes
    half of it). Not counted: activations, normalizations, pooling, adds,
    embedding lookups and softmax, each a few operations per value, small next
    to the multiply-adds. Training costs about three times this (the backward
    pass takes two).

    Args:
        model: a built Keras model.
        sequence_length: the length to assume where the model's time dimension
            is unknown (a text model); default the position table's size, if any.

    Returns:
        FLOPs per example.

    Example:
        >>> inputs = keras.Input((10,))
        >>> flops_per_example(keras.Model(inputs, keras.layers.Dense(3)(inputs)))
        60
    """
    if sequence_length is None:
        for layer in _layers(model):
            if getattr(layer, "max_length", None):
                sequence_length = int(layer.max_length)
    total = 0
    for layer in _layers(model):
        total += _multiply_adds(layer, sequence_length)
    return 2 * total


def _layers(model: Any) -> list:
    out = []
    for layer in model.layers:
        out.extend(_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def _shape(tensor: Any, sequence_length: int | None) -> list[int]:
    dims = list(tensor.shape[1:])
    if None in dims:
        if sequence_length is None:
            raise ValueError("the model's sequence length is unknown; pass sequence_length")
        dims = [sequence_length if d is None else d for d in dims]
    return dims


def _multiply_adds(layer: Any, t: int | None) -> int:
    if isinstance(layer, keras.layers.Dense):
        out = _shape(layer.output, t)
        return math.prod(out[:-1]) * layer.kernel.shape[0] * layer.kernel.shape[1]
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        out = _shape(layer.output, t)  # channels last
        # kernel: [*window, in / groups, out]: each output value is one window's dot product
        return math.prod(out[:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)):
        steps = _shape(layer.input, t)[0]
        cell = layer.cell
        return steps * (math.prod(cell.kernel.shape) + math.prod(cell.recurrent_kernel.shape))
    if isinstance(layer, keras.layers.MultiHeadAttention):
        length = _shape(layer.output, t)[0]
        q, k, v, o = _compat.attention_projections(layer)
        projections = sum(math.prod(d.kernel.shape) for d in (q, k, v, o))
        heads, key_dim = q.kernel.shape[1], q.kernel.shape[2]
        value_dim = v.kernel.shape[2]
        return length * projections + heads * length * length * (key_dim + value_dim)
    return 0
