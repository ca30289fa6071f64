"""What full TensorBoard logging costs tfkit.train, on the benchmark MLP.

Same data, model and seed, trained with `logdir=None` (nothing written) and
with full logging (step scalars every 10 steps, histograms and update ratios
every 50, epoch scalars, graph, text, hparams), alternating, best of N each.

    python benchmarks/logging_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras
import numpy as np

import tfkit


def mlp(spec):
    inputs = keras.Input(spec.input_shape)
    x = keras.layers.Dense(64, activation="relu")(inputs)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def timed(x, y, epochs: int, logdir: str | None) -> float:
    started = time.perf_counter()
    tfkit.train((x, y), model=mlp, task="multiclass", epochs=epochs, batch_size=32,
                validation_split=0.0, strategy="cpu", logdir=logdir, export=None,
                verbose=False, seed=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=32_768)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 20)).astype(np.float32)
    y = (x[:, :10].sum(axis=1) > 0).astype(np.int64)
    best = {"off": float("inf"), "on": float("inf")}
    with tempfile.TemporaryDirectory() as root:
        for i in range(args.repeats):
            best["off"] = min(best["off"], timed(x, y, args.epochs, None))
            best["on"] = min(best["on"], timed(x, y, args.epochs, f"{root}/run{i}"))
    samples = args.rows // 32 * 32 * args.epochs
    for key in ("off", "on"):
        print(f"logging {key:>3}: best {best[key]:.2f} s, {samples / best[key]:,.0f} samples/s")
    print(f"cost of full logging: {best['on'] / best['off'] - 1:+.1%} of training time")


if __name__ == "__main__":
    main()
