"""Lesson 4's memory measurement, in a TensorFlow of its own: one model's peak, nothing else's.

A peak of memory is only one model's in a process that trained nothing else, so
lesson 4 starts ``python -m tfkit.lessons._fresh_process memory WIDTH LAYERS`` once
per size; it prints its result as one JSON line, last.
"""

import importlib
import json
import sys

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import memory, text  # noqa: E402

CONTEXT, MEMORY_BATCH = 64, 8
MODULES = ["argparse", "collections", "functools", "json", "logging", "os", "re", "string"]


def small_corpus(characters: int) -> text.Corpus:
    """The first `characters` of a few standard modules' docstrings."""
    joined = "\n\n".join(text.python_docstrings(MODULES).documents)
    return text.Corpus("docstrings", (joined[:characters],))


def measure_memory(width: int, layers: int) -> dict:
    """Peak resident memory grown while training two steps, against the estimate."""
    corpus = small_corpus(2 * MEMORY_BATCH * CONTEXT + 1)  # exactly two batches
    tf.constant(1.0) + 1.0  # start the runtime before the baseline
    baseline = memory.current_host_bytes()
    result = tfkit.train(
        corpus, model="transformer", window=CONTEXT, model_kwargs={"width": width,
        "heads": 4, "layers": layers}, epochs=1, batch_size=MEMORY_BATCH,
        validation_split=0.0, strategy="cpu", logdir=None, export=None, verbose=False,
    )
    grown = memory.peak_host_bytes() - baseline
    estimate = tfkit.estimate_memory(result.model, MEMORY_BATCH, "adam", sequence_length=CONTEXT)
    return {"width": width, "layers": layers, "parameters": result.model.count_params(),
            "estimate": estimate.total, "measured": grown}


if __name__ == "__main__":
    kind, width, layers = sys.argv[1:]  # kind: "memory", the one there is
    print(json.dumps(measure_memory(int(width), int(layers))))
