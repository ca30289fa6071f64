"""Forward, loss, backward, update: one network trained three ways that agree.

A small neural network learns to tell three penguin species apart from their
measurements. It is trained three times from the very same starting weights:

    A. by hand: the four steps written out with tf.GradientTape;
    B. with tfkit.train: the same four steps, in tfkit/steps.py, inside a loop
       that also handles devices, logging, checkpoints and export;
    C. with Keras's model.fit: the same four steps, inside Keras's trainer.

They end at the same weights (within 1e-4), which shows that all three do the
same thing, and the lesson prints what each one hides from you.

Same start, same data order. Randomness would otherwise make the three
differ, so: the network is built once and each way trains a copy of its
weights; the optimizer is Adam with the same settings; and every step uses the
whole training set as its batch (full-batch gradient descent). tfkit.train
reshuffles its training rows every epoch, but the mean loss over a batch does
not depend on the order of the rows inside it (beyond rounding in the last
digit), so with one batch per epoch the reshuffle changes nothing and the
three see exactly the same data at every step. (With mini-batches, which
lesson 3 is about, each order takes its own slightly different path, and the
three would only agree roughly.)

Run:  tfkit tutorial 2 [--fast]
  or  python tfkit/lessons/02_forward_loss_backward_update.py [--fast] [--workdir DIR]
"""

import argparse
import importlib
import os
import shutil
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import data as tfkit_data  # noqa: E402

LEARNING_RATE = 0.01
SEED = 0
VALIDATION_SPLIT = 0.2
RUNS = {"hand": "02_by_hand", "tfkit": "02_tfkit_train", "fit": "02_model_fit"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps")
    parser.add_argument("--workdir", default=".", help="tensorboard_logs/ is written here")
    return parser.parse_args()


def load_penguins():
    """The training rows as one batch, split exactly as tfkit.train splits them.

    `prepare` is what tfkit.train calls first: it drops rows with missing
    values, holds out a seeded 20 % for validation and describes the columns.
    """
    prepared = tfkit_data.prepare("penguins", validation_split=VALIDATION_SPLIT, seed=SEED)
    spec = prepared.spec
    x, y = next(iter(prepared.train.batch(spec.n_train)))  # all training rows, one batch
    x_val, y_val = prepared.validation_arrays
    print(f"penguins: {spec.n_train} training and {spec.n_val} validation birds, "
          f"features {', '.join(spec.columns)}; classes {', '.join(spec.class_names)}")
    return spec, (x, y), (x_val, y_val)


def copy_of(model: keras.Model) -> keras.Model:
    """A new model with the same layers and the same current weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# --- A. By hand ---------------------------------------------------------------------------

def train_by_hand(model, x, y, steps):
    """The four steps, written out. Returns the loss seen at each step."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()  # mean over the batch
    optimizer = keras.optimizers.Adam(LEARNING_RATE)

    @tf.function  # traced once into a graph, then run fast; the steps are the same
    def step(x, y):
        with tf.GradientTape() as tape:
            probabilities = model(x, training=True)  # 1. forward: the model's guess
            loss = loss_fn(y, probabilities)  # 2. loss: how wrong the guess is
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)  # 3. backward: each weight's share
        optimizer.apply_gradients(zip(gradients, variables, strict=True))  # 4. update
        return loss, probabilities, gradients

    losses = []
    for i in range(steps):
        before = [v.numpy() for v in model.trainable_variables]
        loss, probabilities, gradients = step(x, y)
        if i == 0:
            show_first_step(model, x, y, loss, probabilities, gradients, before)
        losses.append(float(loss))
    return losses


def show_first_step(model, x, y, loss, probabilities, gradients, before):
    """Print what each of the four steps produced, the first time round."""
    first = {name: values[0, 0].numpy() for name, values in x.items()}
    first = {k: v.decode() if isinstance(v, bytes) else round(float(v), 1)
             for k, v in first.items()}
    print("\nA. By hand, step 1, for the first bird of the batch:")
    print(f"  its features: {first}")
    print(f"  1. forward   probabilities {np.round(probabilities[0].numpy(), 3)} "
          f"(true class id {int(y[0])}): random weights, a near-uniform guess")
    print(f"  2. loss      mean cross-entropy over the batch = {float(loss):.4f} "
          f"(ln 3 = {np.log(3):.4f} is a uniform guess)")
    print("  3. backward  one gradient per weight tensor (its size below):")
    for variable, gradient, old in zip(model.trainable_variables, gradients, before, strict=True):
        moved = np.abs(variable.numpy() - old).max()
        print(f"       {variable.path:<32} shape {str(tuple(variable.shape)):<9} "
              f"‖∂L/∂w‖ = {float(tf.norm(gradient)):.4f}   largest |Δw| = {moved:.4f}")
    print(f"  4. update    Adam's first step moves each weight by about η = {LEARNING_RATE} "
          "against its gradient's sign, whatever the gradient's size")


# --- B. tfkit.train -----------------------------------------------------------------------

def train_with_tfkit(start, n_train, steps, logdir):
    """tfkit.train on the same data, split the same way, from a copy of `start`.

    batch_size = n_train makes one step per epoch over the whole training set,
    so `epochs` counts steps.
    """
    result = tfkit.train(
        "penguins", model=lambda spec: copy_of(start), optimizer="adam",
        learning_rate=LEARNING_RATE, batch_size=n_train, epochs=steps,
        validation_split=VALIDATION_SPLIT, seed=SEED, strategy="cpu",
        logdir=logdir, run_name=RUNS["tfkit"], resume=False, export=None, verbose=False,
    )
    return result.model, result.history["loss"]


# --- C. model.fit -------------------------------------------------------------------------

def train_with_fit(model, x, y, steps):
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    one_batch = tf.data.Dataset.from_tensors((x, y))  # one epoch = one step on every row
    history = model.fit(one_batch, epochs=steps, shuffle=False, verbose=0)
    return history.history["loss"]


# --- Compare ------------------------------------------------------------------------------

def largest_difference(a: keras.Model, b: keras.Model) -> float:
    pairs = zip(a.get_weights(), b.get_weights(), strict=True)
    return max(float(np.abs(u - v).max()) for u, v in pairs)


def accuracy(model, x_val, y_val) -> float:
    guesses = np.argmax(model(x_val, training=False).numpy(), axis=-1)
    return float(np.mean(guesses == y_val))


def write_losses(logdir: str, run: str, losses: list[float]) -> None:
    """Loss per step, under the tag and step numbering tfkit uses, so curves overlay."""
    with tf.summary.create_file_writer(os.path.join(logdir, run, "train")).as_default():
        for step, loss in enumerate(losses, start=1):
            tf.summary.scalar("epoch_loss", loss, step=step)


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    steps = 40 if args.fast else 300
    logdir = os.path.join(args.workdir, "tensorboard_logs")
    for run in RUNS.values():
        shutil.rmtree(os.path.join(logdir, run), ignore_errors=True)
    keras.utils.set_random_seed(SEED)
    spec, (x, y), (x_val, y_val) = load_penguins()

    start = tfkit.models.mlp(spec, hidden=(16, 16))  # built once; each way trains a copy
    print(f"network: {start.count_params()} numbers to learn; {steps} steps of Adam, "
          f"η = {LEARNING_RATE}, each on all {spec.n_train} training birds")

    by_hand = copy_of(start)
    hand_losses = train_by_hand(by_hand, x, y, steps)
    print(f"\nA. by hand      : loss {hand_losses[0]:.4f} → {hand_losses[-1]:.6f}")
    tfkit_model, tfkit_losses = train_with_tfkit(start, spec.n_train, steps, logdir)
    print(f"B. tfkit.train  : loss {tfkit_losses[0]:.4f} → {tfkit_losses[-1]:.6f}")
    fitted = copy_of(start)
    fit_losses = train_with_fit(fitted, x, y, steps)
    print(f"C. model.fit    : loss {fit_losses[0]:.4f} → {fit_losses[-1]:.6f}")
    write_losses(logdir, RUNS["hand"], hand_losses)
    write_losses(logdir, RUNS["fit"], fit_losses)
    return report(by_hand, tfkit_model, fitted, (hand_losses, tfkit_losses, fit_losses),
                  (x_val, y_val), logdir)


def report(by_hand, tfkit_model, fitted, losses, validation, logdir) -> int:
    hand_losses, tfkit_losses, fit_losses = (np.array(values) for values in losses)
    differences = {
        "weights, by hand vs tfkit.train": largest_difference(by_hand, tfkit_model),
        "weights, by hand vs model.fit": largest_difference(by_hand, fitted),
        "loss curve, by hand vs tfkit.train": float(np.abs(hand_losses - tfkit_losses).max()),
        "loss curve, by hand vs model.fit": float(np.abs(hand_losses - fit_losses).max()),
    }
    print("\nDo the three agree? Largest difference of any weight, or of the loss at any step:")
    for what, value in differences.items():
        print(f"  {what:<36} {value:.2e}")
    for name, model in (("by hand", by_hand), ("tfkit.train", tfkit_model),
                        ("model.fit", fitted)):
        print(f"  validation accuracy, {name:<12} {accuracy(model, *validation):.3f}")
    print(HIDDEN)
    print(f"Wrote: {os.path.join(logdir, RUNS['hand'])}")
    print(f"Wrote: {os.path.join(logdir, RUNS['tfkit'])}")
    print(f"Wrote: {os.path.join(logdir, RUNS['fit'])}")
    print(f"Look at: tensorboard --logdir {logdir}")
    print(f"  Scalars → 'epoch_loss': the three runs {', '.join(RUNS.values())} draw one "
          "curve on top of another. tfkit's run also has validation loss, gradient norm, "
          "update ratios and histograms.")
    agree = max(differences.values()) <= 1e-4
    print("They agree within 1e-4." if agree else "They differ by more than 1e-4!")
    return 0 if agree else 1


HIDDEN = """
What each way hides:
  A. By hand hides nothing: you choose the batches and their order, call the model,
     the loss, the tape and the optimizer, and you log what you want. It is also all
     yours to get right: shuffling, validation, several devices, saving, resuming.
  B. tfkit.train runs the same four steps (read them in tfkit/steps.py) and adds what a
     real run needs: the split and reshuffle per epoch, a tf.distribute strategy (the
     loss is averaged over the global batch, so 1 or 8 replicas learn the same thing),
     several steps per compiled call, TensorBoard logs, checkpoints, export for serving.
  C. model.fit runs them inside Keras's trainer (Model.train_step): the loss's reduction,
     the metrics, the callbacks and the data adapter (which shuffles unless told not
     to) are all out of sight, and compile() picks choices such as XLA for you.
"""


if __name__ == "__main__":
    raise SystemExit(main())
