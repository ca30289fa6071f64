"""Lesson 4's runs that need a TensorFlow of their own: two CPU replicas, or one memory peak.

`cpu:2` must be chosen before TensorFlow starts, and a peak of memory is only that
model's in a process that trained nothing else: so lesson 4 starts these as
``python -m tfkit.lessons._fresh_process replicas EPOCHS LOGDIR`` or
``... memory WIDTH LAYERS``; each prints its result as one JSON line, last.
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


def penguins_run(logdir: str, strategy: str, epochs: int) -> dict:
    """The penguins MLP, batch 32, on `strategy`: its replicas, losses and speed."""
    result = tfkit.train(
        "penguins", model="mlp", epochs=epochs, batch_size=32, seed=0, strategy=strategy,
        logdir=logdir, run_name=strategy.replace(":", "_"), resume=False, export=None,
        verbose=False, histogram_every_steps=0,
    )
    return {"replicas": result.strategy.num_replicas_in_sync, "loss": result.history["loss"],
            "samples_per_second": result.stats["samples_per_second"][-1]}


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
    kind, *args = sys.argv[1:]
    if kind == "replicas":
        out = penguins_run(args[1], "cpu:2", int(args[0]))
    else:
        out = measure_memory(int(args[0]), int(args[1]))
    print(json.dumps(out))
