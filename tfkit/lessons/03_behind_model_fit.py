# %% [markdown]
# # Lesson 3. What model.fit does behind the scenes: batches, steps, epochs, shuffling, validation
#
# `model.fit(x, y, batch_size=32, epochs=5, validation_split=0.2)` is one line, and it hides a
# loop of loops:
#
# ```
# for each epoch:                      one pass over every training row
#     shuffle the training rows        a new order each epoch
#     for each mini-batch of 32 rows:  one step = forward, loss, backward, update
#     measure the validation loss      no update: rows the model never learns from
# ```
#
# This lesson writes that loop out on the bundled handwritten digits (8×8 images), then trains
# the same network with different batch sizes and learning rates, draws their loss curves side
# by side and writes them to TensorBoard.
#
# Also a script: `tfkit tutorial 3 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer epochs).

# %%
import importlib
import math
import os
import shutil
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import data as tfkit_data  # noqa: E402
from tfkit import tutorials  # noqa: E402

FAST, WORKDIR = tutorials.setup()
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
tf.get_logger().setLevel("ERROR")  # several runs in one process: retracing notices
SEED = 0
EPOCHS = 2 if FAST else 20
BASELINE = {"batch_size": 32, "learning_rate": 1e-3}
keras.utils.set_random_seed(SEED)
logdir = os.path.join(WORKDIR, "tensorboard_logs", "03_behind_model_fit")
shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

# %% [markdown]
# ## Part 1. The loop `model.fit` runs, written out
#
# A train step (forward, loss, backward, update) and an evaluation step (forward and loss
# only: no tape, no update).

# %%
prepared = tfkit_data.prepare("digits", validation_split=0.2, seed=SEED)
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


# %% [markdown]
# The training rows come in mini-batches of 32. `reshuffle_each_iteration` makes every pass
# over the dataset draw a new order. The training loss printed is an average over the epoch,
# measured while the weights moved; the validation loss is measured once, at the end, on rows
# the model never learns from. Keras, like this loop, ends each epoch with a smaller batch
# when the rows do not divide evenly; `tfkit.train` leaves those rows for the next shuffle.

# %%
batch_size = BASELINE["batch_size"]
print(f"{spec.n_train} training rows in mini-batches of {batch_size}: "
      f"{math.ceil(spec.n_train / batch_size)} steps (weight updates) per epoch "
      f"(tfkit.train: {spec.n_train // batch_size} whole steps), {spec.n_val} validation rows")
batches = prepared.train.shuffle(spec.n_train, seed=SEED, reshuffle_each_iteration=True)
batches = batches.batch(batch_size)
for epoch in range(2 if FAST else 5):
    losses, first_labels = [], None
    for x, y in batches:  # one epoch: a fresh shuffle, cut into mini-batches
        losses.append(float(train_step(x, y)))
        if first_labels is None:
            first_labels = y[:10].numpy()
    val = [float(eval_step(x, y)) * len(y) for x, y in prepared.validation.batch(256)]
    print(f"  epoch {epoch + 1}: first batch starts with digits {first_labels}  "
          f"train loss {np.mean(losses):.4f} over {len(losses)} steps  "
          f"validation loss {sum(val) / spec.n_val:.4f}")

# %% [markdown]
# The first batch differs every epoch: shuffling stops the model from learning the order of
# the rows.
#
# **A trap.** `model.fit(validation_split=0.2)` holds out the *last* 20 % of the rows as
# given, unshuffled. The penguins table is sorted by species, so that would be:

# %%
frame = tfkit.datasets.load("penguins").dropna()
held_out = frame.tail(int(len(frame) * 0.2))
print(held_out["species"].value_counts().to_string())

# %% [markdown]
# Not all 3 species, and those the model would have seen least of in training.
# `tfkit.train` shuffles the rows (by its seed) before splitting.
#
# ## Part 2. Batch size and learning rate, side by side
#
# The same network, the same number of epochs, one knob of the baseline (batch 32, learning
# rate 0.001) changed at a time. tfkit logs against the step (one step = one update), and a
# batch of 8 makes four times the steps of a batch of 32 in one epoch; so a small Keras
# callback also writes the loss per *epoch*, so that all runs line up in TensorBoard. Any
# Keras callback works with `tfkit.train`.


# %%
class LossByEpoch(keras.callbacks.Callback):
    def __init__(self, folder: str) -> None:
        super().__init__()
        self.writer = tf.summary.create_file_writer(folder)

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch + 1):
            tf.summary.scalar("by_epoch/loss", logs["loss"])
            tf.summary.scalar("by_epoch/val_loss", logs["val_loss"])
        self.writer.flush()


def run_name(options: dict) -> str:
    return f"batch_{options['batch_size']}-lr_{options['learning_rate']:g}"


# %%
SWEEP = [{"batch_size": 8, "learning_rate": 1e-3}, BASELINE,
         {"batch_size": 256, "learning_rate": 1e-3}, {"batch_size": 32, "learning_rate": 1e-4},
         {"batch_size": 32, "learning_rate": 1e-1}]
histories = {}
print(f"  {'run':<22} {'steps':>6} {'train loss':>11} {'val loss':>9} {'val acc':>8}")
for options in SWEEP:
    name = run_name(options)
    result = tfkit.train(
        "digits", model="mlp", model_kwargs={"hidden": (64,)}, epochs=EPOCHS,
        seed=SEED, strategy="cpu", logdir=logdir, run_name=name, resume=False,
        export=None, verbose=False, log_every_steps=5, histogram_every_steps=0,
        callbacks=[LossByEpoch(os.path.join(logdir, name, "by_epoch"))], **options,
    )
    history = histories[name] = result.history
    steps = EPOCHS * (result.spec.n_train // options["batch_size"])
    print(f"  {name:<22} {steps:>6} {history['loss'][-1]:>11.4f} "
          f"{history['val_loss'][-1]:>9.4f} {history['val_accuracy'][-1]:>8.3f}")

# %% [markdown]
# ## What to look at
#
# **Batch size** (left): a small batch makes many small, noisy updates per epoch; a large
# batch few, smooth ones. Per epoch the large batch learns least, though each of its steps is
# cheaper per row on parallel hardware. The batch size and the learning rate go together.
#
# **Learning rate** (right): too small and the weights barely move; too large and each step
# overshoots the valley, so the loss stalls high or jumps about. (A too-large rate can keep a
# fair accuracy while its loss is huge: a few mistakes made with near-total confidence.)

# %%
figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for panel, knob, values in ((axes[0], "batch_size", (8, 32, 256)),
                            (axes[1], "learning_rate", (1e-4, 1e-3, 1e-1))):
    for value in values:
        options = {**BASELINE, knob: value}
        val_loss = histories[run_name(options)]["val_loss"]
        panel.plot(range(1, len(val_loss) + 1), val_loss, "o-", label=f"{knob} {value:g}")
    panel.set(title=f"Changing the {knob.replace('_', ' ')}", xlabel="epoch",
              ylabel="validation loss", yscale="log")
    panel.legend()
tutorials.show(figure, os.path.join(WORKDIR, "03_batch_size_and_learning_rate.png"))
for name, history in histories.items():
    print(f"  {name:<22} validation loss {history['val_loss'][-1]:.3f}")

# %% [markdown]
# In TensorBoard, Scalars → `by_epoch/loss` and `by_epoch/val_loss`: the five runs per epoch,
# side by side. Scalars → `loss` (every few steps): the same runs against the step; tick
# `batch_8…` and `batch_256…` to see many noisy steps against few smooth ones.

# %%
print(f"Wrote: {logdir}")
print(f"Look at: tensorboard --logdir {logdir}")
