"""A training run in its own process, for kill-and-resume tests.

Prints "step N" after every call (so the parent can kill it mid-epoch), and
saves the final weights to --out as .npz.

    python train_child.py --logdir D --run R --out W.npz [--strategy cpu:2] [--sleep 0.02]
"""

import argparse
import logging
import sys
import time

import keras
import numpy as np

import tfkit


class Pace(keras.callbacks.Callback):
    """Slows each call a little and reports progress, so a kill lands mid-run."""

    def __init__(self, sleep):
        super().__init__()
        self.sleep = sleep

    def on_train_batch_end(self, batch, logs=None):
        print(f"batch {batch}", flush=True)
        time.sleep(self.sleep)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="cpu")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = tfkit.train(
            "penguins", epochs=args.epochs, batch_size=16, seed=args.seed,
            strategy=args.strategy, learning_rate=args.learning_rate,
            steps_per_execution=2, checkpoint_every_steps=4, histogram_every_steps=0,
            logdir=args.logdir, run_name=args.run, export=None, verbose=False,
            callbacks=[Pace(args.sleep)],
        )
    except tfkit.TrainingInterrupted as stop:
        print(f"interrupted: {stop}", flush=True)
        return 128 + stop.signum
    except tfkit.NonFiniteLossError as err:
        print(f"nonfinite: {err}", flush=True)
        return 3
    np.savez(args.out, *result.model.get_weights())
    print(f"done {len(result.history['loss'])} epochs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
