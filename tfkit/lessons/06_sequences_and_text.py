# %% [markdown]
# # Lesson 6. Sequences and text: an LSTM forecasting sunspots, a tiny GPT writing docstrings
#
# Data in order is data where the past predicts the next step. The same training loop learns
# it; what changes is how the examples are cut:
#
# - a series: the 24 months before month t → the sunspot number at month t;
# - a text: 64 characters → the next character at each of them.
#
# Each model is only worth something against the simplest forecast that needs no learning, so
# this lesson shows that baseline beside the model:
#
# - sunspots: "same as last month"; validation MAE (sunspots per month);
# - text: character frequencies alone (the unigram model); validation cross-entropy in nats
#   per character (ln 97 = 4.57 is a blind guess);
#
# and shows samples of the tiny GPT's writing as it learns.
#
# Also a script: `tfkit tutorial 6 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer epochs, less text).

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
from tfkit import text, tutorials  # noqa: E402

FAST, WORKDIR = tutorials.setup()
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
tf.get_logger().setLevel("ERROR")
SEED = 0
keras.utils.set_random_seed(SEED)
logdir = os.path.join(WORKDIR, "tensorboard_logs", "06_sequences_and_text")
shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

# %% [markdown]
# ## Part 1. A series: monthly sunspot numbers, 1749-2008
#
# 24 months in, the next month out. The last 20 % of the months are validation: the model is
# judged on a future it never saw.

# %%
result = tfkit.train(
    "sunspots", model="lstm", window=24, epochs=4 if FAST else 30, batch_size=32, seed=SEED,
    strategy="cpu", logdir=logdir, run_name="sunspots_lstm", resume=False, export=None,
    verbose=False, histogram_every_steps=0, lr_schedule="cosine",
)
naive = result.spec.info["naive_validation_mae"]
for line in result.spec.report:
    print(f"  {line}")
print(f"  {'epoch':>5} {'train MAE':>10} {'val MAE':>8}   naive (same as last month): "
      f"{naive:.2f}")
for epoch, (mae, val_mae) in enumerate(
        zip(result.history["mae"], result.history["val_mae"], strict=True), start=1):
    print(f"  {epoch:>5} {mae:>10.2f} {val_mae:>8.2f}")
final, best = result.history["val_mae"][-1], min(result.history["val_mae"])
print(f"LSTM validation MAE {final:.2f} against naive {naive:.2f}: "
      f"{1 - final / naive:+.1%} (best epoch {best:.2f}, {1 - best / naive:+.1%}).")

# %% [markdown]
# A modest margin at best, and that is the honest result: month to month the count jumps by
# more than the 11-year cycle moves it, so last month is already a strong guess. A
# least-squares linear model on the same windows does about as well as the LSTM
# (`benchmarks/RESULTS.md`, "Model zoo"): here the LSTM learns roughly a weighted average of
# recent months, not a hidden pattern. The picture shows it: the forecast follows the truth a
# step behind, much as the naive one does, a little smoother.

# %%
val_x, val_y = tfkit_data.prepare("sunspots", window=24).validation_arrays
forecast = result.model.predict(val_x, verbose=0).reshape(-1)
months = slice(0, 120)  # the first ten years of the validation months
figure, axes = plt.subplots(figsize=(12, 4))
axes.plot(val_y[months], color="black", label="truth")
axes.plot(val_x[months, -1], ":", color="gray", label=f"naive: same as last month "
          f"(MAE {np.mean(np.abs(val_x[:, -1] - val_y)):.2f})")
axes.plot(forecast[months], color="tab:orange", label=f"LSTM (MAE "
          f"{np.mean(np.abs(forecast - val_y)):.2f})")
axes.set(title="Sunspot forecast, one month ahead, on validation months",
         xlabel="month of the validation period", ylabel="sunspot number")
axes.legend()
tutorials.show(figure, os.path.join(WORKDIR, "06_sunspot_forecast.png"))

# %% [markdown]
# ## Part 2. A text: a tiny GPT on the docstrings of Python's standard library
#
# In fast mode, the docstrings of a few modules (~100k characters) instead of ~1,500
# docstrings of the whole standard library. Before training the model would write noise; a
# blind guess costs ln 97 = 4.57 nats per character, the unigram model less.

# %%
if FAST:
    corpus = text.python_docstrings(["argparse", "collections", "functools", "itertools", "json",
                                     "logging", "os", "pathlib", "re", "shutil", "string",
                                     "textwrap"])
    size, epochs, characters = {"width": 32, "heads": 2, "layers": 1}, 3, 60
else:
    corpus = text.Corpus("python_docstrings", text.python_docstrings().documents[:1500])
    size, epochs, characters = {"width": 64, "heads": 4, "layers": 2}, 4, 120
prepared = text.prepare_text(corpus, context=64)
unigram = prepared.spec.info["unigram_validation_loss"]
for line in prepared.spec.report:
    print(f"  {line}")
print(f"A tiny GPT {size}; a blind guess costs {math.log(97):.2f} nats/char, the unigram "
      f"model {unigram:.3f}.")

# %% [markdown]
# A Keras callback writes what the model says after `"Return the "` at the end of every
# epoch, from the same seed every time, so the samples differ only because the weights did.


# %%
class Samples(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.written = []

    def on_epoch_end(self, epoch, logs=None):
        sample = tfkit.generate(self.model, "Return the ", characters, temperature=0.8, seed=1)
        self.written.append((epoch + 1, logs["val_loss"], sample))
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.3f}, val_loss {logs['val_loss']:.3f} "
              f"nats/char; it writes:\n    {sample!r}")


samples = Samples()
result = tfkit.train(
    corpus, model="transformer", window=64, model_kwargs=size, epochs=epochs,
    batch_size=32, learning_rate=2e-3, seed=SEED, strategy="cpu", logdir=logdir,
    run_name="docstrings_gpt", resume=False, export=None, verbose=False,
    histogram_every_steps=0, callbacks=[samples],
)

# %%
val_loss = result.history["val_loss"][-1]
print(f"parameters: {result.model.count_params():,}")
print(f"validation loss {val_loss:.3f} nats/char against the unigram baseline "
      f"{unigram:.3f}: {unigram - val_loss:.3f} nats/char lower "
      f"({val_loss / math.log(2):.2f} against {unigram / math.log(2):.2f} bits).")
print(f"e^-loss is the probability given to the right next character (a geometric mean): "
      f"{math.exp(-val_loss):.3f} against {math.exp(-unigram):.3f} for the unigram.")

# %% [markdown]
# The writing as it improves: the validation loss per epoch against the unigram baseline, and
# beside it what the model wrote at the end of each epoch.

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(14, 3.6),
                                     gridspec_kw={"width_ratios": [1, 2.2]})
left.plot([e for e, _, _ in samples.written], [v for _, v, _ in samples.written], "o-",
          label="tiny GPT")
left.axhline(unigram, color="gray", linestyle=":", label="unigram baseline")
left.set(title="Validation loss", xlabel="epoch", ylabel="nats per character")
left.legend()
right.axis("off")
right.set_title("What it writes after 'Return the '", loc="left")
for row, (epoch, _, sample) in enumerate(samples.written):
    right.text(0, 1 - (row + 1) / (len(samples.written) + 1), f"epoch {epoch}: {sample!r}",
               family="monospace", fontsize=8, transform=right.transAxes)
tutorials.show(figure, os.path.join(WORKDIR, "06_text_as_it_learns.png"))

# %% [markdown]
# In TensorBoard, Scalars → `sunspots_lstm`: `mae` and `val_mae` per epoch; the naive MAE
# printed above is the line to beat. Scalars → `docstrings_gpt`: `loss` falling towards and
# below the unigram baseline, in nats per character.

# %%
print(f"Wrote: {os.path.join(logdir, 'sunspots_lstm')}")
print(f"Wrote: {os.path.join(logdir, 'docstrings_gpt')}")
print(f"Look at: tensorboard --logdir {logdir}")
