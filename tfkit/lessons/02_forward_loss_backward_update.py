# %% [markdown]
# # Lesson 2. Forward, loss, backward, update: one network trained three ways that agree
#
# A small neural network learns to tell three penguin species apart from their measurements.
# It is trained three times from the very same starting weights:
#
# - **A. by hand**: the four steps written out with `tf.GradientTape`;
# - **B. with `tfkit.train`**: the same four steps, in `tfkit/steps.py`, inside a loop that
#   also handles devices, logging, checkpoints and export;
# - **C. with Keras's `model.fit`**: the same four steps, inside Keras's trainer.
#
# They end at the same weights (within 1e-4), which shows that all three do the same thing,
# and the lesson says what each one hides from you.
#
# **Same start, same data order.** Randomness would otherwise make the three differ, so: the
# network is built once and each way trains a copy of its weights; the optimizer is Adam with
# the same settings; and every step uses the whole training set as its batch (full-batch
# gradient descent). `tfkit.train` reshuffles its training rows every epoch, but the mean loss
# over a batch does not depend on the order of the rows inside it (beyond rounding in the last
# digit), so with one batch per epoch the reshuffle changes nothing. (With mini-batches, which
# lesson 3 is about, each order takes its own slightly different path.)
#
# Also a script: `tfkit tutorial 2 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer steps).

# %%
import importlib
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
LEARNING_RATE = 0.01
SEED = 0
VALIDATION_SPLIT = 0.2
STEPS = 20 if FAST else 300
RUNS = {"hand": "02_by_hand", "tfkit": "02_tfkit_train", "fit": "02_model_fit"}
logdir = os.path.join(WORKDIR, "tensorboard_logs")
for run in RUNS.values():
    shutil.rmtree(os.path.join(logdir, run), ignore_errors=True)  # a re-run replaces them

# %% [markdown]
# ## The data and the starting network
#
# `prepare` is what `tfkit.train` calls first: it drops rows with missing values, holds out a
# seeded 20 % for validation and describes the columns. We take its training rows as one
# batch, split exactly as `tfkit.train` will split them.

# %%
keras.utils.set_random_seed(SEED)
prepared = tfkit_data.prepare("penguins", validation_split=VALIDATION_SPLIT, seed=SEED)
spec = prepared.spec
x, y = next(iter(prepared.train.batch(spec.n_train)))  # all training rows, one batch
x_val, y_val = prepared.validation_arrays
print(f"penguins: {spec.n_train} training and {spec.n_val} validation birds, "
      f"features {', '.join(spec.columns)}; classes {', '.join(spec.class_names)}")

start = tfkit.models.mlp(spec, hidden=(16, 16))  # built once; each way trains a copy
print(f"network: {start.count_params()} numbers to learn; {STEPS} steps of Adam, "
      f"η = {LEARNING_RATE}, each on all {spec.n_train} training birds")


def copy_of(model: keras.Model) -> keras.Model:
    """A new model with the same layers and the same current weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# %% [markdown]
# ## A. By hand
#
# The four steps, written out: forward (the model's guess), loss (how wrong), backward (each
# weight's share of the blame, from the tape), update (Adam moves each weight). `tf.function`
# traces the step once into a graph and then runs it fast; the steps are the same.

# %%
by_hand = copy_of(start)
loss_fn = keras.losses.SparseCategoricalCrossentropy()  # mean over the batch
optimizer = keras.optimizers.Adam(LEARNING_RATE)


@tf.function
def step(x, y):
    with tf.GradientTape() as tape:
        probabilities = by_hand(x, training=True)  # 1. forward: the model's guess
        loss = loss_fn(y, probabilities)  # 2. loss: how wrong the guess is
    variables = by_hand.trainable_variables
    gradients = tape.gradient(loss, variables)  # 3. backward: each weight's share
    optimizer.apply_gradients(zip(gradients, variables, strict=True))  # 4. update
    return loss, probabilities, gradients


before = [v.numpy() for v in by_hand.trainable_variables]
loss, probabilities, gradients = step(x, y)
hand_losses = [float(loss)]

# %% [markdown]
# What each of the four steps produced, the first time round, for the first bird of the
# batch. Random weights make a near-uniform guess, so the loss starts near ln 3, the
# cross-entropy of guessing 1/3 for every species. Adam's first step moves each weight by
# about η against its gradient's sign, whatever the gradient's size.

# %%
first = {name: values[0, 0].numpy() for name, values in x.items()}
first = {k: v.decode() if isinstance(v, bytes) else round(float(v), 1) for k, v in first.items()}
print(f"its features: {first}")
print(f"1. forward   probabilities {np.round(probabilities[0].numpy(), 3)} "
      f"(true class id {int(y[0])})")
print(f"2. loss      mean cross-entropy over the batch = {float(loss):.4f} "
      f"(ln 3 = {np.log(3):.4f} is a uniform guess)")
print("3. backward  one gradient per weight tensor; 4. update: how far each moved")
for variable, gradient, old in zip(by_hand.trainable_variables, gradients, before, strict=True):
    moved = np.abs(variable.numpy() - old).max()
    print(f"     {variable.path:<32} shape {str(tuple(variable.shape)):<9} "
          f"‖∂L/∂w‖ = {float(tf.norm(gradient)):.4f}   largest |Δw| = {moved:.4f}")

# %%
for _ in range(STEPS - 1):
    hand_losses.append(float(step(x, y)[0]))
print(f"A. by hand      : loss {hand_losses[0]:.4f} → {hand_losses[-1]:.6f}")

# %% [markdown]
# ## B. `tfkit.train`
#
# The same data, split the same way, from a copy of the same start. `batch_size = n_train`
# makes one step per epoch over the whole training set, so `epochs` counts steps.

# %%
result = tfkit.train(
    "penguins", model=lambda spec: copy_of(start), optimizer="adam",
    learning_rate=LEARNING_RATE, batch_size=spec.n_train, epochs=STEPS,
    validation_split=VALIDATION_SPLIT, seed=SEED, strategy="cpu",
    logdir=logdir, run_name=RUNS["tfkit"], resume=False, export=None, verbose=False,
    histogram_every_steps=0,  # weight histograms cost time and are lesson 5's subject
)
tfkit_model, tfkit_losses = result.model, result.history["loss"]
print(f"B. tfkit.train  : loss {tfkit_losses[0]:.4f} → {tfkit_losses[-1]:.6f}")

# %% [markdown]
# ## C. `model.fit`

# %%
fitted = copy_of(start)
fitted.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
               loss=keras.losses.SparseCategoricalCrossentropy())
one_batch = tf.data.Dataset.from_tensors((x, y))  # one epoch = one step on every row
fit_losses = fitted.fit(one_batch, epochs=STEPS, shuffle=False, verbose=0).history["loss"]
print(f"C. model.fit    : loss {fit_losses[0]:.4f} → {fit_losses[-1]:.6f}")

# %% [markdown]
# ## Do the three agree?
#
# The largest difference of any weight, or of the loss at any step. The picture draws the
# three loss curves on top of one another: you should see one line.


# %%
def largest_difference(a: keras.Model, b: keras.Model) -> float:
    pairs = zip(a.get_weights(), b.get_weights(), strict=True)
    return max(float(np.abs(u - v).max()) for u, v in pairs)


def accuracy(model) -> float:
    guesses = np.argmax(model(x_val, training=False).numpy(), axis=-1)
    return float(np.mean(guesses == y_val))


differences = {
    "weights, by hand vs tfkit.train": largest_difference(by_hand, tfkit_model),
    "weights, by hand vs model.fit": largest_difference(by_hand, fitted),
    "loss curve, by hand vs tfkit.train": float(np.abs(np.subtract(hand_losses,
                                                                   tfkit_losses)).max()),
    "loss curve, by hand vs model.fit": float(np.abs(np.subtract(hand_losses, fit_losses)).max()),
}
for what, value in differences.items():
    print(f"  {what:<36} {value:.2e}")
for name, model in (("by hand", by_hand), ("tfkit.train", tfkit_model), ("model.fit", fitted)):
    print(f"  validation accuracy, {name:<12} {accuracy(model):.3f}")
agree = max(differences.values()) <= 1e-4
print("They agree within 1e-4." if agree else "They differ by more than 1e-4!")

figure, axes = plt.subplots(figsize=(7, 3.8))
for losses, label, style in ((hand_losses, "A. by hand", "-"),
                             (tfkit_losses, "B. tfkit.train", "--"),
                             (fit_losses, "C. model.fit", ":")):
    axes.plot(range(1, STEPS + 1), losses, style, linewidth=2, label=label)
axes.set(title="Three ways, one loss curve", xlabel="step (all training rows)",
         ylabel="cross-entropy loss")
axes.legend()
tutorials.show(figure, os.path.join(WORKDIR, "02_three_loss_curves.png"))
if not agree:
    raise RuntimeError("the three ways differ by more than 1e-4")

# %% [markdown]
# ## What each way hides
#
# - **A. By hand** hides nothing: you choose the batches and their order, call the model, the
#   loss, the tape and the optimizer, and you log what you want. It is also all yours to get
#   right: shuffling, validation, several devices, saving, resuming.
# - **B. `tfkit.train`** runs the same four steps (read them in `tfkit/steps.py`) and adds what
#   a real run needs: the split and reshuffle per epoch, a `tf.distribute` strategy (the loss is
#   averaged over the global batch, so 1 or 8 replicas learn the same thing), several steps per
#   compiled call, TensorBoard logs, checkpoints, export for serving.
# - **C. `model.fit`** runs them inside Keras's trainer (`Model.train_step`): the loss's
#   reduction, the metrics, the callbacks and the data adapter (which shuffles unless told not
#   to) are all out of sight, and `compile()` picks choices such as XLA for you.
#
# In TensorBoard, Scalars → `epoch_loss`: the three runs draw one curve on top of another.
# tfkit's run also has validation loss, gradient norm and update ratios.


# %%
def write_losses(run: str, losses: list[float]) -> None:
    """Loss per step, under the tag and step numbering tfkit uses, so the curves overlay."""
    with tf.summary.create_file_writer(os.path.join(logdir, run, "train")).as_default():
        for step_number, value in enumerate(losses, start=1):
            tf.summary.scalar("epoch_loss", value, step=step_number)


write_losses(RUNS["hand"], hand_losses)
write_losses(RUNS["fit"], fit_losses)
for run in RUNS.values():
    print(f"Wrote: {os.path.join(logdir, run)}")
print(f"Look at: tensorboard --logdir {logdir}")
