"""Two replicas on a busy CPU: runs in a row, tfkit.train against model.fit.

An MLP on the bundled penguins table (batch 32, 3 epochs, a validation pass
over 20 % of the rows each epoch) is trained again and again in one process on
two logical CPU devices (MirroredStrategy), while other processes keep every
core busy: what a notebook sees on a shared machine. tfkit.train reads the
table as it is; model.fit gets the same rows as numbers (missing rows dropped,
text columns one-hot, standardized), as Keras needs them under a strategy.
The variants alternate, so the load hits both alike. Each run reports its wall
time and the CPU time this process used: a run that sleeps shows as a wall
time far above its CPU time (before tfkit fed CPU replicas itself, a dropped
tf.data iterator could hold the training thread until tf.data's tuning thread
woke, up to a minute later).

    python benchmarks/busy_cpu.py                   # 8 runs each, 2 busy processes
    python benchmarks/busy_cpu.py --runs 12 --busy 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(  # before anything starts TensorFlow's devices
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import tfkit  # noqa: E402
from tfkit import data, datasets, distribute, models  # noqa: E402

EPOCHS, BATCH = 3, 32


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def penguin_numbers() -> tuple[np.ndarray, np.ndarray]:
    table = datasets.load("penguins").dropna()
    y = table.pop("species").astype("category").cat.codes.to_numpy()
    x = pd.get_dummies(table, dtype=float).to_numpy(np.float32)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6), y


def run_tfkit(table: pd.DataFrame) -> None:
    tfkit.train(table, target="species", model="mlp", epochs=EPOCHS, batch_size=BATCH, seed=0,
                strategy="cpu:2", verbose=False, logdir=None, export=None)


def run_fit(strategy: tf.distribute.Strategy, prepared: data.PreparedData) -> None:
    with strategy.scope():
        model = models.build("mlp", prepared.spec)
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"])
    train = prepared.train.shuffle(1024, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    validation = prepared.validation.batch(BATCH).prefetch(tf.data.AUTOTUNE)
    model.fit(train, validation_data=validation, epochs=EPOCHS, verbose=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs of each variant")
    parser.add_argument("--busy", type=int, default=2, help="busy-looping processes alongside")
    args = parser.parse_args()
    strategy = distribute.resolve("cpu:2")
    table = datasets.load("penguins")
    prepared = data.prepare(penguin_numbers(), validation_split=0.2, seed=0)
    variants = {"tfkit.train": lambda: run_tfkit(table),
                "model.fit": lambda: run_fit(strategy, prepared)}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    try:
        for i in range(args.runs):
            for name, run in variants.items():
                started, cpu = time.perf_counter(), _cpu_seconds()
                run()
                wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
                times[name].append((wall, cpu))
                print(f"run {i + 1:2d} {name:12s} wall {wall:6.1f} s  cpu {cpu:5.1f} s",
                      flush=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    print(f"\n{args.runs} runs each beside {args.busy} busy processes on "
          f"{os.cpu_count()} cores:")
    print("| variant | median wall s | slowest wall s | runs with wall > 4 x cpu |")
    print("|---|---:|---:|---:|")
    for name, rows in times.items():
        walls = [wall for wall, _ in rows]
        stalled = sum(wall > 4 * cpu for wall, cpu in rows)
        print(f"| {name} | {statistics.median(walls):.1f} | {max(walls):.1f} | {stalled} |")
    ours, theirs = ([wall for wall, _ in times[name]] for name in variants)
    median, slowest = statistics.median(ours) / statistics.median(theirs), max(ours) / max(theirs)
    print(f"\ntfkit.train / model.fit: median {median:.2f}x, slowest {slowest:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
