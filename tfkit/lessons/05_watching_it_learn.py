"""Watching it learn: TensorBoard for a CNN on digits, with a good and a bad learning rate.

Numbers printed at the end of a run say how it ended, not how it got there.
TensorBoard shows the way: the loss at every few steps, the weights and their
gradients as histograms over time, and the update-to-weight ratio — how far
one step moves a layer's weights, relative to their size:

    update ratio = ‖w_after − w_before‖ / ‖w_before‖

The rule of thumb is about 1e-3 (anywhere from 1e-4 to 1e-2 is fine, larger
early on): each step nudges the weights by a thousandth. Far above, the
learning rate is so large that every step rewrites the layer; far below, the
layer barely learns.

A small convolutional network (tfkit's "cnn") learns the bundled 8×8
handwritten digits twice, once with a good learning rate and once with a bad
one. The lesson reads the TensorBoard event files back to print the update
ratios, and draws the loss curves into loss_curve.png (needs matplotlib:
pip install 'tfkit[plot]').

Run:  tfkit tutorial 5 [--fast]
  or  python tfkit/lessons/05_watching_it_learn.py [--fast] [--workdir DIR]
"""

import argparse
import collections
import glob
import importlib
import os
import shutil
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402

RUN_GROUP = "05_watching_it_learn"
LEARNING_RATES = {"good": 1e-3, "bad": 5e-2}  # Adam


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer epochs")
    parser.add_argument("--workdir", default=".",
                        help="tensorboard_logs/ and loss_curve.png are written here")
    return parser.parse_args()


def train(logdir: str, name: str, learning_rate: float, epochs: int) -> str:
    """One run of the CNN; returns its TensorBoard folder."""
    result = tfkit.train(
        "digits", model="cnn", learning_rate=learning_rate, epochs=epochs, batch_size=32,
        seed=0, strategy="cpu", logdir=logdir, run_name=name, resume=False, export=None,
        verbose=False,
        steps_per_execution=5,  # compiled calls of 5 steps, so the host can log this often
        log_every_steps=5,  # the loss every 5 steps: a detailed curve
        histogram_every_steps=10,  # weights, gradients and update ratios every 10 steps
    )
    history = result.history
    print(f"  {name:<5} learning rate {learning_rate:<6g} final train loss "
          f"{history['loss'][-1]:.4f}, validation loss {history['val_loss'][-1]:.4f}, "
          f"validation accuracy {history['val_accuracy'][-1]:.3f}")
    return result.logdir


def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a folder's event files: {tag: [(step, value), ...]}.

    An event file is a sequence of records; TF2 summaries store each value as
    a tensor. Scalars are the rank-0 ones (histograms are [buckets, 3] arrays).
    """
    scalars = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if array is not None and array.ndim == 0 and array.dtype.kind == "f":
                    scalars[value.tag].append((event.step, float(array)))
    return {tag: sorted(points) for tag, points in scalars.items()}


def print_update_ratios(runs: dict[str, dict]) -> None:
    layers = sorted({tag.split("/", 1)[1] for scalars in runs.values()
                     for tag in scalars["train"] if tag.startswith("update_ratio/")})
    print("\nUpdate-to-weight ratio per layer, at the first and the last logged step "
          "(1e-4 to 1e-2 is healthy):")
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
    print(f"""  With the bad rate the first steps move each layer by tens of percent of its size:
  the weights are thrown about rather than tuned, and the network may never recover.
  Here its loss sits at {bad_loss:.3f}, next to ln 10 = {np.log(10):.3f}: it guesses every
  digit equally. Little gradient is left (grad_norm {norms['bad']:.2f}, against
  {norms['good']:.2f} for the good run), so its updates die away. A small update ratio
  late in a run is healthy only if the loss went down.""")


def draw_loss_curves(runs: dict[str, dict], path: str) -> bool:
    """loss_curve.png: training loss by step, validation loss by epoch, update ratios."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # draw to a file; no window, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nmatplotlib is not installed, so no loss_curve.png: "
              "pip install 'tfkit[plot]' (or matplotlib) and run again")
        return False
    colors = {"good": "tab:blue", "bad": "tab:red"}
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, scalars in runs.items():
        label = f"{name} (learning rate {LEARNING_RATES[name]:g})"
        steps, values = zip(*scalars["train"]["loss"], strict=True)
        left.plot(steps, values, color=colors[name], label=label)
        steps, values = zip(*scalars["validation"]["epoch_loss"], strict=True)
        middle.plot(steps, values, "o-", color=colors[name], label=label)
        ratios = [tag for tag in scalars["train"] if tag.startswith("update_ratio/")]
        for tag, style in zip(sorted(ratios), ["-", "--", ":", "-."] * 3, strict=False):
            steps, values = zip(*scalars["train"][tag], strict=True)
            right.plot(steps, values, style, marker=".", color=colors[name],
                       label=f"{name}: {tag.split('/', 1)[1]}")
    left.set(title="Training loss", xlabel="step (one mini-batch update)",
             ylabel="cross-entropy loss", yscale="log")
    middle.set(title="Validation loss", xlabel="step (at the end of each epoch)",
               ylabel="cross-entropy loss", yscale="log")
    right.axhspan(1e-4, 1e-2, color="green", alpha=0.08)
    right.set(title="Update-to-weight ratio per layer (green: healthy)", xlabel="step",
              ylabel="‖Δw‖ / ‖w‖ in one step", yscale="log")
    for axes in (left, middle):
        axes.legend()
        axes.grid(True, which="both", alpha=0.3)
    right.legend(fontsize="small", ncol=2)
    right.grid(True, which="both", alpha=0.3)
    figure.suptitle("A CNN learning the 8×8 digits: a good and a bad learning rate")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    tf.get_logger().setLevel("ERROR")  # two runs in one process: retracing notices
    epochs = 2 if args.fast else 15
    logdir = os.path.join(args.workdir, "tensorboard_logs", RUN_GROUP)
    shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

    print(f"Training tfkit's CNN on the digits for {epochs} epochs, twice:")
    runs = {}
    for name, learning_rate in LEARNING_RATES.items():
        folder = train(logdir, name, learning_rate, epochs)
        runs[name] = {split: read_scalars(os.path.join(folder, split))
                      for split in ("train", "validation")}
    print_update_ratios(runs)

    png = os.path.join(args.workdir, "loss_curve.png")
    drawn = draw_loss_curves(runs, png)
    print(f"\nWrote: {logdir}")
    if drawn:
        print(f"Wrote: {png}")
        print(f"Look at: {png} (the same curves as a picture)")
    print(f"Look at: tensorboard --logdir {logdir}")
    print("  Scalars → 'loss': the good run falls steadily, the bad one stalls high or jumps.")
    print("  Scalars → 'update_ratio/…': one curve per layer; compare the two runs against 1e-3.")
    print("  Scalars → 'grad_norm': the size of the whole gradient at each step.")
    print("  Histograms (or Distributions) → 'weights/…' and 'gradients/…': how each layer's "
          "weights spread out as they learn, and how the gradients shrink as the loss falls.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
