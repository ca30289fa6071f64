"""`lstm`, `gru` and `conv1d`: sequence models for series windows [T], sequences [T, F] or text."""

from __future__ import annotations

from typing import Any

import keras

from tfkit.data import DataSpec
from tfkit.zoo.layers import head, sequence_inputs, text_inputs


def lstm(spec: DataSpec, units: int = 64, layers: int = 1, embedding: int = 32) -> keras.Model:
    """Long short-term memory (Hochreiter & Schmidhuber 1997): a gated recurrent network.

    On a series window it reads the (normalized) values in order and predicts
    the next value from its last state; on text (`data="python_docstrings"`)
    it embeds characters and predicts the next one at every position.

    At the defaults on sunspots (window 24): 16,961 parameters, 0.80 MFLOPs
    per example forward. On text (context 64, 97 characters): 34,241
    parameters, 3.94 MFLOPs per example.

    Args:
        spec: the data spec.
        units: state size of each layer (width).
        layers: stacked recurrent layers (depth).
        embedding: character embedding size, for text.

    Example:
        >>> result = tfkit.train("sunspots", model="lstm", window=24, epochs=30,
        ...                      lr_schedule="cosine")  # doctest: +SKIP
    """
    return _recurrent(spec, keras.layers.LSTM, "lstm", units, layers, embedding)


def gru(spec: DataSpec, units: int = 64, layers: int = 1, embedding: int = 32) -> keras.Model:
    """Gated recurrent unit (Cho et al. 2014): the LSTM's idea with two gates and one state.

    At the defaults on sunspots (window 24): 12,929 parameters, 0.60 MFLOPs
    per example forward. On text (context 64): 28,225 parameters, 3.15 MFLOPs
    per example.

    Args:
        spec: the data spec.
        units: state size of each layer (width).
        layers: stacked recurrent layers (depth).
        embedding: character embedding size, for text.
    """
    return _recurrent(spec, keras.layers.GRU, "gru", units, layers, embedding)


def conv1d(
    spec: DataSpec, filters: int = 32, kernel_size: int = 3, layers: int = 4,
    embedding: int = 32,
) -> keras.Model:
    """Temporal convolutions (WaveNet-style): causal 1-D convolutions with doubling dilation.

    Layer i looks `kernel_size` steps apart by `2**i`, so 4 layers of kernel
    3 see 31 steps. Causal padding means no position sees its future, so the
    same model predicts the next character at every position of a text. On a
    series window, the last layer's outputs are flattened into the head.

    At the defaults on sunspots (window 24): 10,209 parameters, 0.45 MFLOPs
    per example forward. On text (context 64): 18,721 parameters, 1.97 MFLOPs
    per example.

    Args:
        spec: the data spec.
        filters: channels of each layer (width).
        kernel_size: taps of each convolution.
        layers: convolution layers (depth).
        embedding: character embedding size, for text.
    """
    text = spec.kind == "text"
    if text:
        inputs, x = text_inputs(spec, embedding)
        scale = None
    else:
        inputs, x, scale = sequence_inputs(spec, "conv1d")
    for i in range(layers):
        x = keras.layers.Conv1D(filters, kernel_size, padding="causal", dilation_rate=2**i,
                                activation="relu", name=f"conv_{i}")(x)
    if not text:
        x = keras.layers.Flatten()(x)
    return keras.Model(inputs, head(spec, x, scale), name="conv1d")


def _recurrent(spec: DataSpec, layer: Any, name: str, units: int, layers: int,
               embedding: int) -> keras.Model:
    text = spec.kind == "text"
    if text:
        inputs, x = text_inputs(spec, embedding)
        scale = None
    else:
        inputs, x, scale = sequence_inputs(spec, name)
    for i in range(layers):
        # Text needs a prediction at every position; a forecast only the last state.
        x = layer(units, return_sequences=text or i < layers - 1, name=f"{name}_{i}")(x)
    return keras.Model(inputs, head(spec, x, scale), name=name)
