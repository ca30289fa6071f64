# %% [markdown]
# # Lesson 5. Watching it learn: TensorBoard for a CNN on digits, a good and a bad learning rate
#
# Numbers printed at the end of a run say how it ended, not how it got there. TensorBoard
# shows the way: the loss at every few steps, the weights and their gradients as histograms
# over time, and the **update-to-weight ratio**: how far one step moves a layer's weights,
# relative to their size:
#
# update ratio = ‖w_after − w_before‖ / ‖w_before‖
#
# The rule of thumb is about 1e-3 (anywhere from 1e-4 to 1e-2 is fine, larger early on): each
# step nudges the weights by a thousandth. Far above, the learning rate is so large that every
# step rewrites the layer; far below, the layer barely learns.
#
# A small convolutional network (tfkit's `"cnn"`) learns the bundled 8×8 handwritten digits
# twice, once with a good learning rate and once with a bad one. The lesson reads the
# TensorBoard event files back to print the update ratios and draw the curves, and shows how
# to open TensorBoard inside this notebook.
#
# Also a script: `tfkit tutorial 5 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer epochs).

# %%
import collections
import glob
import importlib
import os
import shutil
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import tutorials  # noqa: E402

FAST, WORKDIR = tutorials.setup()
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
tf.get_logger().setLevel("ERROR")  # two runs in one process: retracing notices
LEARNING_RATES = {"good": 1e-3, "bad": 5e-2}  # Adam
EPOCHS = 2 if FAST else 15
logdir = os.path.join(WORKDIR, "tensorboard_logs", "05_watching_it_learn")
shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

# %% [markdown]
# ## Two runs
#
# `log_every_steps=5` writes the loss every 5 steps (a detailed curve);
# `histogram_every_steps=10` writes the weights, the gradients and the update ratios every 10.

# %%
folders = {}
print(f"Training tfkit's CNN on the digits for {EPOCHS} epochs, twice:")
for name, learning_rate in LEARNING_RATES.items():
    result = tfkit.train(
        "digits", model="cnn", learning_rate=learning_rate, epochs=EPOCHS, batch_size=32,
        seed=0, strategy="cpu", logdir=logdir, run_name=name, resume=False, export=None,
        verbose=False,
        steps_per_execution=5,  # compiled calls of 5 steps, so the host can log this often
        log_every_steps=5, histogram_every_steps=10,
    )
    history, folders[name] = result.history, result.logdir
    print(f"  {name:<5} learning rate {learning_rate:<6g} final train loss "
          f"{history['loss'][-1]:.4f}, validation loss {history['val_loss'][-1]:.4f}, "
          f"validation accuracy {history['val_accuracy'][-1]:.3f}")

# %% [markdown]
# ## Reading the event files back
#
# An event file is a sequence of records; TF2 summaries store each value as a tensor. Scalars
# are the rank-0 ones (histograms are `[buckets, 3]` arrays).


# %%
def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a folder's event files: {tag: [(step, value), ...]}."""
    scalars = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if array is not None and array.ndim == 0 and array.dtype.kind == "f":
                    scalars[value.tag].append((event.step, float(array)))
    return {tag: sorted(points) for tag, points in scalars.items()}


runs = {name: {split: read_scalars(os.path.join(folder, split))
               for split in ("train", "validation")} for name, folder in folders.items()}

# %% [markdown]
# ## The update ratio per layer, at the first and the last logged step

# %%
print("The update ratio ‖Δw‖ / ‖w‖ per layer (1e-4 to 1e-2 is healthy):")
layers = sorted({tag.split("/", 1)[1] for scalars in runs.values()
                 for tag in scalars["train"] if tag.startswith("update_ratio/")})
print(f"  {'layer':<16}" + "".join(f"{name + ' first':>13}{name + ' last':>13}"
                                   for name in runs))
for layer in layers:
    cells = []
    for scalars in runs.values():
        points = scalars["train"].get(f"update_ratio/{layer}", [])
        cells += [f"{points[0][1]:>13.1e}", f"{points[-1][1]:>13.1e}"] if points else []
    print(f"  {layer:<16}" + "".join(cells))
bad_loss = runs["bad"]["train"]["loss"][-1][1]
norms = {name: runs[name]["train"]["grad_norm"][-1][1] for name in runs}
print(f"bad run: loss {bad_loss:.3f} (ln 10 = {np.log(10):.3f}), grad_norm {norms['bad']:.2f} "
      f"against {norms['good']:.2f} for the good run")

# %% [markdown]
# With the bad rate the first steps move each layer by tens of percent of its size: the
# weights are thrown about rather than tuned, and the network may never recover. Its loss
# sits near ln 10: it guesses every digit equally. Little gradient is left, so its updates
# die away. A small update ratio late in a run is healthy only if the loss went down.
#
# ## The same curves as a picture
#
# Training loss by step, validation loss by epoch, and the update ratio of every layer, the
# healthy band shaded green: the good run (blue) stays in it, the bad one (red) starts far
# above it.

# %%
colors = {"good": "tab:blue", "bad": "tab:red"}
figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
for name, scalars in runs.items():
    label = f"{name} (learning rate {LEARNING_RATES[name]:g})"
    left.plot(*zip(*scalars["train"]["loss"], strict=True), color=colors[name], label=label)
    middle.plot(*zip(*scalars["validation"]["epoch_loss"], strict=True), "o-",
                color=colors[name], label=label)
    ratios = sorted(tag for tag in scalars["train"] if tag.startswith("update_ratio/"))
    for tag, style in zip(ratios, ["-", "--", ":", "-."] * 3, strict=False):
        right.plot(*zip(*scalars["train"][tag], strict=True), style, marker=".",
                   color=colors[name], label=f"{name}: {tag.split('/', 1)[1]}")
left.set(title="Training loss", xlabel="step (one mini-batch update)", yscale="log")
middle.set(title="Validation loss", xlabel="step (at the end of each epoch)", yscale="log")
right.axhspan(1e-4, 1e-2, color="green", alpha=0.08)
right.set(title="Update-to-weight ratio per layer (green: healthy)", xlabel="step",
          ylabel="‖Δw‖ / ‖w‖ in one step", yscale="log")
for axes in (left, middle, right):
    axes.legend(fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
figure.suptitle("A CNN learning the 8×8 digits: a good and a bad learning rate")
figure.tight_layout()
tutorials.show(figure, os.path.join(WORKDIR, "loss_curve.png"))

# %% [markdown]
# ## TensorBoard, inside this notebook
#
# TensorBoard's notebook extension starts a TensorBoard server on the logs and shows it in the
# page (from a shell: `tensorboard --logdir tfkit_lessons/tensorboard_logs/05_watching_it_learn`,
# then open http://localhost:6006). What to look at:
#
# - **Scalars → `loss`**: the good run falls steadily, the bad one stalls high or jumps.
# - **Scalars → `update_ratio/…`**: one curve per layer; compare the two runs against 1e-3.
# - **Scalars → `grad_norm`**: the size of the whole gradient at each step.
# - **Histograms** (or **Distributions**) → `weights/…` and `gradients/…`: how each layer's
#   weights spread out as they learn, and how the gradients shrink as the loss falls.

# %%
# %load_ext tensorboard

# %% tags=["skip-execution"]
# %tensorboard --logdir {logdir}

# %%
print(f"Wrote: {logdir}")
print(f"Look at: tensorboard --logdir {logdir}")
