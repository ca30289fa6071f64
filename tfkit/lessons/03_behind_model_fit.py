"""What model.fit does behind the scenes: mini-batches, steps, epochs, shuffling, validation.

`model.fit(x, y, batch_size=32, epochs=5, validation_split=0.2)` is one line,
and it hides a loop of loops:

    for each epoch:                      one pass over every training row
        shuffle the training rows        a new order each epoch
        for each mini-batch of 32 rows:  one step = forward, loss, backward, update
        measure the validation loss      no update: rows the model never learns from

This lesson writes that loop out on the bundled handwritten digits (8×8 images),
then trains the same network with different batch sizes and learning rates
and writes their loss curves side by side in TensorBoard.

Run:  tfkit tutorial 3 [--fast]
  or  python tfkit/lessons/03_behind_model_fit.py [--fast] [--workdir DIR]
"""

import argparse
import importlib
import math
import os
import shutil
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import data as tfkit_data  # noqa: E402

SEED = 0
RUN_GROUP = "03_behind_model_fit"
BASELINE = {"batch_size": 32, "learning_rate": 1e-3}
# Each comparison changes one knob of the baseline and keeps the other.
SWEEP = [
    {"batch_size": 8, "learning_rate": 1e-3},
    BASELINE,
    {"batch_size": 256, "learning_rate": 1e-3},
    {"batch_size": 32, "learning_rate": 1e-4},
    {"batch_size": 32, "learning_rate": 1e-1},
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer epochs")
    parser.add_argument("--workdir", default=".", help="tensorboard_logs/ is written here")
    return parser.parse_args()


# --- Part 1: the loop model.fit runs ------------------------------------------------------

def fit_by_hand(prepared, epochs: int, batch_size: int) -> None:
    """model.fit's loop written out: epochs of shuffled mini-batches, then validation."""
    spec = prepared.spec
    model = tfkit.models.mlp(spec, hidden=(64,))
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.Adam(BASELINE["learning_rate"])

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def eval_step(x, y):
        return loss_fn(y, model(x, training=False))  # no tape, no update: only measure

    steps = math.ceil(spec.n_train / batch_size)  # Keras keeps the last, smaller batch
    print(f"\nPart 1. {spec.n_train} training rows in mini-batches of {batch_size}: "
          f"{steps} steps (weight updates) per epoch, {spec.n_val} validation rows")
    print(f"  ({spec.n_train} / {batch_size} is not whole: Keras, like this loop, ends each epoch "
          "with a smaller batch; tfkit.train leaves those rows for the next shuffle and "
          f"makes {spec.n_train // batch_size} whole steps.)")
    # reshuffle_each_iteration: every pass over the dataset draws a new order.
    batches = prepared.train.shuffle(spec.n_train, seed=SEED, reshuffle_each_iteration=True)
    batches = batches.batch(batch_size)
    for epoch in range(epochs):
        losses, first_labels = [], None
        for x, y in batches:  # one epoch: a fresh shuffle, cut into mini-batches
            losses.append(float(train_step(x, y)))
            if first_labels is None:
                first_labels = y[:10].numpy()
        # The training loss is an average over the epoch, measured while the weights
        # moved; the validation loss is measured once, at the end, on unseen rows.
        val = [float(eval_step(x, y)) * len(y) for x, y in prepared.validation.batch(256)]
        print(f"  epoch {epoch + 1}: first batch starts with digits {first_labels}  "
              f"train loss {np.mean(losses):.4f} over {len(losses)} steps  "
              f"validation loss {sum(val) / spec.n_val:.4f}")
    print("  The first batch differs every epoch: shuffling stops the model from learning "
          "the order of the rows.")


def warn_about_validation_split() -> None:
    """Keras's validation_split takes the *last* rows, before any shuffling."""
    frame = tfkit.datasets.load("penguins").dropna()
    held_out = frame.tail(int(len(frame) * 0.2))
    print("\nA trap: model.fit(validation_split=0.2) holds out the last 20 % of the rows "
          "as given, unshuffled. The penguins table is sorted by species, so that would be:")
    counts = held_out["species"].value_counts()
    print("  " + ", ".join(f"{n} {name}" for name, n in counts.items())
          + f" — {len(counts)} of the 3 species, and those the model would have seen least "
          "of in training.")
    print("  tfkit.train shuffles the rows (by its seed) before splitting.")


# --- Part 2: batch size and learning rate, side by side -----------------------------------

class LossByEpoch(keras.callbacks.Callback):
    """Writes loss per *epoch*, so runs with different batch sizes line up in TensorBoard.

    tfkit logs against the step (one step = one update); a batch of 8 makes four
    times the steps of a batch of 32 in one epoch. Any Keras callback works with
    tfkit.train; this one writes its own curve beside tfkit's.
    """

    def __init__(self, logdir: str) -> None:
        super().__init__()
        self.writer = tf.summary.create_file_writer(logdir)

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch + 1):
            tf.summary.scalar("by_epoch/loss", logs["loss"])
            tf.summary.scalar("by_epoch/val_loss", logs["val_loss"])
        self.writer.flush()


def run_name(options: dict) -> str:
    return f"batch_{options['batch_size']}-lr_{options['learning_rate']:g}"


def sweep(logdir: str, epochs: int) -> dict[str, dict]:
    results = {}
    print(f"\nPart 2. The same network, {epochs} epochs each, one knob changed at a time:")
    print(f"  {'run':<22} {'steps':>6} {'train loss':>11} {'val loss':>9} {'val acc':>8}")
    for options in SWEEP:
        name = run_name(options)
        result = tfkit.train(
            "digits", model="mlp", model_kwargs={"hidden": (64,)}, epochs=epochs,
            seed=SEED, strategy="cpu", logdir=logdir, run_name=name, resume=False,
            export=None, verbose=False, log_every_steps=5, histogram_every_steps=0,
            callbacks=[LossByEpoch(os.path.join(logdir, name, "by_epoch"))], **options,
        )
        history = result.history
        steps = epochs * (result.spec.n_train // options["batch_size"])
        results[name] = {key: values[-1] for key, values in history.items()}
        print(f"  {name:<22} {steps:>6} {history['loss'][-1]:>11.4f} "
              f"{history['val_loss'][-1]:>9.4f} {history['val_accuracy'][-1]:>8.3f}")
    return results


def explain(results: dict[str, dict]) -> None:
    base = results[run_name(BASELINE)]["val_loss"]
    small = results["batch_8-lr_0.001"]["val_loss"]
    large = results["batch_256-lr_0.001"]["val_loss"]
    slow = results["batch_32-lr_0.0001"]["val_loss"]
    fast = results["batch_32-lr_0.1"]["val_loss"]
    print(f"""
What the numbers say (validation loss after the same number of epochs):
  batch size: 8 → {small:.3f}, 32 → {base:.3f}, 256 → {large:.3f}.
    A small batch makes many small, noisy updates per epoch; a large batch few, smooth
    ones: per epoch the large batch learns least, though each of its steps is cheaper
    per row on parallel hardware. The batch size and the learning rate go together.
  learning rate: 0.0001 → {slow:.3f}, 0.001 → {base:.3f}, 0.1 → {fast:.3f}.
    Too small and the weights barely move; too large and each step overshoots the
    valley, so the loss stalls high or jumps about. (A too-large rate can keep a fair
    accuracy while its loss is huge: a few mistakes made with near-total confidence.)""")


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    tf.get_logger().setLevel("ERROR")  # several runs in one process: retracing notices
    epochs = 2 if args.fast else 20
    keras.utils.set_random_seed(SEED)
    logdir = os.path.join(args.workdir, "tensorboard_logs", RUN_GROUP)
    shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

    prepared = tfkit_data.prepare("digits", validation_split=0.2, seed=SEED)
    fit_by_hand(prepared, epochs=2 if args.fast else 5, batch_size=BASELINE["batch_size"])
    warn_about_validation_split()
    explain(sweep(logdir, epochs))

    print(f"\nWrote: {logdir}")
    print(f"Look at: tensorboard --logdir {logdir}")
    print("  Scalars → 'by_epoch/loss' and 'by_epoch/val_loss': the five runs per epoch, "
          "side by side.")
    print("  Scalars → 'loss' (every few steps): the same runs against the step; tick "
          "'batch_8…' and 'batch_256…' to see many noisy steps against few smooth ones.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
