"""Sampling from a character-level language model, and the text corpus it learns from.

The corpus, its vocabulary and `prepare_text` live in `tfkit.data.corpus` and
are importable from here too; this module holds what runs on a trained model:
`generate` samples with the same graph code (`sample_text`) the exported
model runs.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from tfkit.data.corpus import (
    DEFAULT_CONTEXT,
    NAME,
    SEPARATOR,
    SKIP_MODULES,
    UNKNOWN,
    VOCABULARY,
    Corpus,
    cache_dir,
    decode,
    encode,
    is_corpus,
    prepare_text,
    python_docstrings,
    unigram_loss,
)
from tfkit.data.corpus import _collected as _collected  # tests clear its cache through here

__all__ = [
    "DEFAULT_CONTEXT", "MAX_GENERATED", "NAME", "SEPARATOR", "SKIP_MODULES", "UNKNOWN",
    "VOCABULARY", "Corpus", "cache_dir", "context_length", "decode", "decode_tensor", "encode",
    "encode_tensor", "generate", "is_corpus", "prepare_text", "python_docstrings",
    "sample_text", "unigram_loss",
]

MAX_GENERATED = 2000  # characters per request at most: a served model bounds its work


def encode_tensor(text: tf.Tensor) -> tf.Tensor:
    """`encode` in the graph: a scalar string to int32 ids."""
    points = tf.strings.unicode_decode(text, "UTF-8", errors="replace")
    ids = tf.where((points >= 32) & (points <= 126), points - 30, 0)
    return tf.cast(tf.where(points == 10, 1, ids), tf.int32)


def decode_tensor(ids: tf.Tensor) -> tf.Tensor:
    """`decode` in the graph: ids to a scalar string."""
    return tf.strings.reduce_join(tf.gather(tf.constant(VOCABULARY), ids))


def sample_text(
    model: Any, prompt: tf.Tensor, length: tf.Tensor, *, temperature: tf.Tensor,
    seed: tf.Tensor, context: int,
) -> tf.Tensor:
    """The prompt followed by `length` sampled characters (graph code, one prompt).

    Each step feeds the last `context` ids, reads the next-character
    probabilities at the last position, and draws from them sharpened by
    `temperature` with a stateless sampler keyed by `seed` and the step, so a
    seed always gives the same text. An empty prompt starts from a newline.
    """
    prompt_ids = encode_tensor(prompt)
    ids = tf.cond(tf.size(prompt_ids) > 0, lambda: prompt_ids, lambda: tf.constant([1]))
    start = tf.size(ids)
    seed = tf.cast(seed, tf.int64)

    def step(i, ids):
        probabilities = model(ids[-context:][None, :], training=False)[0, -1]
        logits = tf.math.log(tf.cast(probabilities, tf.float32) + 1e-10)
        key = seed + tf.stack([tf.cast(i, tf.int64), tf.constant(0, tf.int64)])
        drawn = tf.random.stateless_categorical(
            logits[None, :] / temperature, 1, seed=key, dtype=tf.int32
        )
        return i + 1, tf.concat([ids, drawn[0]], axis=0)

    _, ids = tf.while_loop(
        lambda i, _: i < length, step, [tf.constant(0), ids],
        shape_invariants=[tf.TensorShape([]), tf.TensorShape([None])],
    )
    return tf.strings.join([prompt, decode_tensor(ids[start:])])


_SAMPLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def generate(
    model: Any, prompt: str, n: int = 200, *, temperature: float = 1.0, seed: int | None = None,
    context: int | None = None,
) -> str:
    """Sample `n` characters after `prompt` from a character language model.

    Args:
        model: maps ids [1, L] to next-character probabilities [1, L, V].
        prompt: the text to continue (characters outside the vocabulary read as unknown).
        n: characters to add.
        temperature: below 1 sharper (more likely characters), above 1 more varied.
        seed: the same seed gives the same text; None draws one.
        context: characters the model sees; default the model's position table
            size (a transformer), else 64.

    Returns:
        The prompt followed by the generated characters.

    Raises:
        ValueError: n < 0 or temperature <= 0.

    Example:
        >>> result = tfkit.train("python_docstrings", model="transformer")  # doctest: +SKIP
        >>> tfkit.generate(result.model, "Return the ", 40, temperature=0.8)  # doctest: +SKIP
        'Return the number of bytes in the buffer...'
    """
    if n < 0 or not temperature > 0:
        raise ValueError(f"need n >= 0 and temperature > 0; got n={n}, temperature={temperature}")
    context = context or context_length(model)
    sampler = _SAMPLERS.get(model, {}).get(context)
    if sampler is None:
        sampler = tf.function(functools.partial(_sample_one, model, context=context))
        _SAMPLERS.setdefault(model, {})[context] = sampler
    seed = int(np.random.default_rng().integers(2**31)) if seed is None else int(seed)
    text = sampler(tf.constant(prompt), tf.constant(n), tf.constant(float(temperature)),
                   tf.constant([seed, 0], tf.int64))
    return text.numpy().decode("utf-8")


def _sample_one(model, prompt, length, temperature, seed, *, context):
    return sample_text(model, prompt, length, temperature=temperature, seed=seed, context=context)


def context_length(model: Any) -> int:
    """The longest input a model takes: its position table's size, else `DEFAULT_CONTEXT`."""
    for layer in model.layers:
        if getattr(layer, "max_length", None):
            return int(layer.max_length)
    return DEFAULT_CONTEXT
