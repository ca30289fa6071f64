"""`transformer`: a decoder-only character language model, a GPT at toy scale."""

from __future__ import annotations

from typing import Any

import keras

from tfkit.data import DataSpec
from tfkit.zoo.layers import PositionEmbedding, head, text_inputs


def transformer(
    spec: DataSpec, width: int = 64, heads: int = 4, layers: int = 2, mlp_ratio: int = 4,
    dropout: float = 0.0, context: int | None = None,
) -> keras.Model:
    """GPT (Radford et al. 2018/2019) in miniature: next-character prediction with causal attention.

    Characters are embedded and given a learned position vector; each of
    `layers` blocks is pre-norm causal multi-head self-attention plus a
    two-layer MLP, each added back to its input (the residual stream); a final
    layer norm and a softmax over the vocabulary at every position. The
    causal mask lets position t attend only to positions <= t, so one pass
    trains all `context` next-character predictions of an example at once.
    GPT-2 small is the same model at width 768, 12 heads, 12 layers, context
    1024, and 50,257 tokens.

    At the defaults (context 64, 97 characters): 116,705 parameters,
    15.5 MFLOPs per example forward (0.24 MFLOPs per character).

    Args:
        spec: the data spec (text: `data="python_docstrings"` or a `tfkit.text.Corpus`).
        width: the residual stream's size (d_model).
        heads: attention heads per block; width must divide by it.
        layers: blocks (depth).
        mlp_ratio: the MLP's hidden size over the width.
        dropout: after attention and MLP; 0 keeps `cpu` and `cpu:N` runs identical.
        context: the longest input; default the data's context (`window`).

    Example:
        >>> result = tfkit.train("python_docstrings", model="transformer")  # doctest: +SKIP
        >>> tfkit.generate(result.model, "Return the ", 60)  # doctest: +SKIP
    """
    if spec.kind != "text":
        raise ValueError(
            f"model 'transformer' is a character language model and needs text "
            f"(data='python_docstrings' or a tfkit.text.Corpus); got {spec.kind} data"
        )
    if width % heads:
        raise ValueError(f"width {width} must divide by heads {heads}")
    context = context or spec.info["context"]
    inputs, x = text_inputs(spec, width)
    x = PositionEmbedding(context, name="position_embedding")(x)
    for i in range(layers):
        x = _block(x, width, heads, mlp_ratio, dropout, f"block_{i}")
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    return keras.Model(inputs, head(spec, x), name="transformer")


def _block(x: Any, width: int, heads: int, mlp_ratio: int, dropout: float, name: str) -> Any:
    h = keras.layers.LayerNormalization(name=f"{name}_norm_1")(x)
    h = keras.layers.MultiHeadAttention(heads, width // heads, dropout=dropout,
                                        name=f"{name}_attention")(h, h, use_causal_mask=True)
    x = keras.layers.Add()([x, h])
    h = keras.layers.LayerNormalization(name=f"{name}_norm_2")(x)
    h = keras.layers.Dense(width * mlp_ratio, activation="gelu", name=f"{name}_mlp_in")(h)
    h = keras.layers.Dense(width, name=f"{name}_mlp_out")(h)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    return keras.layers.Add()([x, h])
