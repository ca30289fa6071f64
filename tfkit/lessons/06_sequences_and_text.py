"""Sequences and text: an LSTM forecasting sunspots, a tiny GPT writing docstrings.

Data in order is data where the past predicts the next step. The same
training loop learns it; what changes is how the examples are cut:

    a series:  the 24 months before month t  →  the sunspot number at month t
    a text:    64 characters                 →  the next character at each of them

Each model is only worth something against the simplest forecast that needs
no learning, so this lesson prints that baseline beside the model:

    sunspots:  "same as last month"; validation MAE (sunspots per month)
    text:      character frequencies alone (the unigram model); validation
               cross-entropy in nats per character (ln 97 = 4.57 is a blind guess)

and prints samples of the tiny GPT's writing as it learns.

Run:  tfkit tutorial 6 [--fast]
  or  python tfkit/lessons/06_sequences_and_text.py [--fast] [--workdir DIR]
"""

import argparse
import importlib
import math
import os
import shutil
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import text  # noqa: E402

SEED = 0
RUN_GROUP = "06_sequences_and_text"
PROMPT = "Return the "
# --fast: the docstrings of a few modules (~100k characters) instead of the whole
# standard library (~8M), collected in a couple of seconds.
FAST_MODULES = ["argparse", "collections", "functools", "itertools", "json", "logging", "os",
                "pathlib", "re", "shutil", "string", "textwrap"]
FULL_DOCUMENTS = 1500  # the first of the standard library's ~5,400 docstrings: a few minutes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer epochs, less text")
    parser.add_argument("--workdir", default=".", help="tensorboard_logs/ is written here")
    return parser.parse_args()


# --- Part 1: a series ---------------------------------------------------------------------

def forecast_sunspots(logdir: str, epochs: int) -> dict:
    result = tfkit.train(
        "sunspots", model="lstm", window=24, epochs=epochs, batch_size=32, seed=SEED,
        strategy="cpu", logdir=logdir, run_name="sunspots_lstm", resume=False, export=None,
        verbose=False, histogram_every_steps=0, lr_schedule="cosine",
    )
    spec = result.spec
    naive = spec.info["naive_validation_mae"]
    print("Part 1. Monthly sunspot numbers, 1749-2008: 24 months in, the next month out.")
    for line in spec.report:
        print(f"  {line}")
    print(f"  {'epoch':>5} {'train MAE':>10} {'val MAE':>8}   naive (same as last month): "
          f"{naive:.2f}")
    for epoch, (mae, val_mae) in enumerate(
            zip(result.history["mae"], result.history["val_mae"], strict=True), start=1):
        print(f"  {epoch:>5} {mae:>10.2f} {val_mae:>8.2f}")
    final, best = result.history["val_mae"][-1], min(result.history["val_mae"])
    print(f"  LSTM validation MAE {final:.2f} against naive {naive:.2f}: "
          f"{1 - final / naive:+.1%} (best epoch {best:.2f}, {1 - best / naive:+.1%}).")
    print("  A modest margin at best, and that is the honest result: month to month the\n"
          "  count jumps by more than the 11-year cycle moves it, so last month is already a\n"
          "  strong guess. A least-squares linear model on the same windows does about as\n"
          "  well as the LSTM (benchmarks/RESULTS.md, 'Model zoo'): here the LSTM learns\n"
          "  roughly a weighted average of recent months, not a hidden pattern.")
    return {"lstm_val_mae": final, "naive_val_mae": naive}


# --- Part 2: a text -----------------------------------------------------------------------

class Samples(keras.callbacks.Callback):
    """Prints what the model writes after `PROMPT` at the end of every epoch.

    The same seed every time, so the samples differ only because the weights did.
    """

    def __init__(self, characters: int) -> None:
        super().__init__()
        self.characters = characters

    def on_epoch_end(self, epoch, logs=None):
        sample = tfkit.generate(self.model, PROMPT, self.characters, temperature=0.8, seed=1)
        print(f"  epoch {epoch + 1}: loss {logs['loss']:.3f}, val_loss {logs['val_loss']:.3f} "
              f"nats/char; it writes:\n    {sample!r}")


def write_like_docstrings(logdir: str, fast: bool) -> dict:
    if fast:
        corpus = text.python_docstrings(FAST_MODULES)
        size, epochs, characters = {"width": 32, "heads": 2, "layers": 1}, 3, 60
    else:
        documents = text.python_docstrings().documents[:FULL_DOCUMENTS]
        corpus = text.Corpus("python_docstrings", documents)
        size, epochs, characters = {"width": 64, "heads": 4, "layers": 2}, 4, 120
    prepared = text.prepare_text(corpus, context=64)
    unigram = prepared.spec.info["unigram_validation_loss"]
    print(f"\nPart 2. A tiny GPT ({size}) on the docstrings of Python's standard library.")
    for line in prepared.spec.report:
        print(f"  {line}")
    print(f"  Before training it would write noise; a blind guess costs ln 97 = "
          f"{math.log(97):.2f} nats/char, the unigram model {unigram:.3f}.")
    result = tfkit.train(
        corpus, model="transformer", window=64, model_kwargs=size, epochs=epochs,
        batch_size=32, learning_rate=2e-3, seed=SEED, strategy="cpu", logdir=logdir,
        run_name="docstrings_gpt", resume=False, export=None, verbose=False,
        histogram_every_steps=0, callbacks=[Samples(characters)],
    )
    val_loss = result.history["val_loss"][-1]
    print(f"  parameters: {result.model.count_params():,}")
    print(f"  validation loss {val_loss:.3f} nats/char against the unigram baseline "
          f"{unigram:.3f}: {unigram - val_loss:.3f} nats/char lower "
          f"({val_loss / math.log(2):.2f} against {unigram / math.log(2):.2f} bits).")
    print(f"  e^-loss is the probability given to the right next character (a geometric mean): "
          f"{math.exp(-val_loss):.3f} against {math.exp(-unigram):.3f} for the unigram.")
    return {"val_loss": val_loss, "unigram": unigram}


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(SEED)
    logdir = os.path.join(args.workdir, "tensorboard_logs", RUN_GROUP)
    shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

    forecast_sunspots(logdir, epochs=4 if args.fast else 30)
    write_like_docstrings(logdir, args.fast)

    print(f"\nWrote: {os.path.join(logdir, 'sunspots_lstm')}")
    print(f"Wrote: {os.path.join(logdir, 'docstrings_gpt')}")
    print(f"Look at: tensorboard --logdir {logdir}")
    print("  Scalars → 'sunspots_lstm': 'mae' and 'val_mae' per epoch; the naive MAE printed "
          "above is the line to beat.")
    print("  Scalars → 'docstrings_gpt': 'loss' falling towards and below the unigram "
          "baseline printed above, in nats per character.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
