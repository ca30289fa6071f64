"""The first training of a process: replica steps traced as written, against AutoGraph's rewrite.

`tf.function` hands every Python function it traces to AutoGraph, which rewrites loops and
conditions on tensors into graph ops (parsing and transforming each function's source the
first time it is called). tfkit's loops over steps and batches need that; its replica
steps do not (they use `tf.cond` where a tensor decides) and are traced as written when
their loss and metrics are Keras's own (`tfkit/steps.py`, `traced`). A loss function of
the user's own keeps the rewriting, so a Python `if` on a tensor works in it.

The two kinds train with the same loss: "keras_loss" passes Keras's
`sparse_categorical_crossentropy` (traced as written), "own_loss" a function of its own
that returns just that (rewritten). Each run is a fresh process that trains the penguins
MLP twice (2 epochs, no logs, no export): the first training pays for AutoGraph's
rewriting and tracing, the second traces new functions only (the rewritten code is
cached). Each run reports both trainings' CPU time and the first's final loss (the same
in both kinds).

    python benchmarks/first_trace.py             # 5 runs each
    python benchmarks/first_trace.py --runs 9
"""

from __future__ import annotations

import argparse

from fresh_runs import alternate, medians

CHILD = r"""
import json, sys, time
from tfkit import _quiet
_quiet.install()
import keras, tfkit
def own_loss(y_true, y_pred):
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
loss = own_loss if sys.argv[1] == "own_loss" else keras.losses.sparse_categorical_crossentropy
def timed():
    start = time.process_time()
    result = tfkit.train("penguins", loss=loss, epochs=2, seed=0, logdir=None, export=None,
                         verbose=False)
    return time.process_time() - start, result.history["loss"][-1]
(first, final), (second, _) = timed(), timed()
print(json.dumps({"first": round(first, 3), "second": round(second, 3), "loss": final}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = alternate(CHILD, ("keras_loss", "own_loss"), args.runs)
    for key in ("first", "second"):
        cpu = medians(runs, key)
        print(f"median CPU s of the {key} training: as written (keras_loss) "
              f"{cpu['keras_loss']:.2f}  rewritten (own_loss) {cpu['own_loss']:.2f}  "
              f"ratio {cpu['keras_loss'] / cpu['own_loss']:.2f}")
    losses = {kind: {run["loss"] for run in kind_runs} for kind, kind_runs in runs.items()}
    print(f"final losses: {losses}")


if __name__ == "__main__":
    main()
