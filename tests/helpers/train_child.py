"""A training run in its own process, for kill-and-resume tests.

Prints its pid, then "batch N" after every call (so the parent can kill it
mid-epoch), and saves the final weights to --out as .npz and the history
beside it as .json. Under TF_CONFIG, "{index}" in --out, --logdir and
--export becomes the worker's index.

    python train_child.py --logdir D --run R --out W.npz [--strategy cpu:2] [--sleep 0.02]
"""

import argparse
import json
import logging
import os
import sys
import time

from tfkit import _quiet

_quiet.own_process()  # as the `tfkit train` command's: TensorFlow's objects frozen once started

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfkit  # noqa: E402


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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--export", default=None)
    args = parser.parse_args()
    index = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
    for name in ("out", "logdir", "export"):
        if getattr(args, name):
            setattr(args, name, getattr(args, name).replace("{index}", str(index)))
    print(f"pid {os.getpid()}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = tfkit.train(
            "penguins", epochs=args.epochs, batch_size=16, seed=args.seed,
            strategy=args.strategy, learning_rate=args.learning_rate,
            steps_per_execution=2, checkpoint_every_steps=4, histogram_every_steps=0,
            logdir=args.logdir, run_name=args.run, export=args.export, verbose=False,
            callbacks=[Pace(args.sleep)],
        )
    except tfkit.TrainingInterrupted as stop:
        print(f"interrupted: {stop}", flush=True)
        return 128 + stop.signum
    except tfkit.NonFiniteLossError as err:
        print(f"nonfinite: {err}", flush=True)
        return 3
    np.savez(args.out, *result.model.get_weights())
    with open(args.out.replace(".npz", ".json"), "w") as f:
        json.dump(result.history, f)
    print(f"done {len(result.history['loss'])} epochs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
