"""What full TensorBoard logging costs tfkit.train, on the benchmark MLP.

Same data, model and seed, trained with `logdir=None` (no events written) and
with full logging (step scalars every 10 steps, histograms and update ratios
every 50 as their time budget allows, epoch scalars, graph, text, hparams),
arms alternating, best of N each.

Checkpoints are not logging: by default they live under the logdir, so a run
with `logdir=None` would save none and the difference would include the
initial and final checkpoint. Every arm here gets its own fresh
`checkpoint_dir` with the default saving rule, so both pay the same
checkpoint cost and the difference is logging alone.

Each run is timed end to end (data checks, model build, tracing, training,
closing the event files) by the wall clock and by this process's CPU time;
the CPU time is less disturbed by other work on a shared machine. Garbage
is collected before each run: otherwise collecting one run's traced graphs
(seconds, at a moment the collector picks) lands in whichever run is next.

`--breakdown` adds arms that switch one part of logging off, to attribute
the cost: `no_histograms` (histogram_every_steps=0: no inspections, no
gradient carried out of the step loop) and `no_step_scalars` (step-level
scalars never due). Running two `--epochs` values separates one-time costs
from per-step costs.

    python benchmarks/logging_cost.py --repeats 7 --epochs 5
    python benchmarks/logging_cost.py --repeats 5 --epochs 10 --breakdown
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import keras
import numpy as np

import tfkit

ARMS = {
    "off": {"logdir": False},
    "on": {"logdir": True},
}
BREAKDOWN_ARMS = {
    "no_histograms": {"logdir": True, "histogram_every_steps": 0},
    "no_step_scalars": {"logdir": True, "log_every_steps": 10**9},
}


def mlp(spec):
    inputs = keras.Input(spec.input_shape)
    x = keras.layers.Dense(64, activation="relu")(inputs)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def timed(x, y, epochs: int, folder: str, arm: dict) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one tfkit.train run."""
    options = dict(arm)
    options["logdir"] = f"{folder}/logs" if options["logdir"] else None
    # The previous run's traced graphs are garbage in reference cycles; collected
    # here, not at a random point of this run.
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    tfkit.train((x, y), model=mlp, task="multiclass", epochs=epochs, batch_size=32,
                validation_split=0.0, strategy="cpu", export=None, verbose=False, seed=0,
                checkpoint_dir=f"{folder}/checkpoints", **options)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=32_768)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 20)).astype(np.float32)
    y = (x[:, :10].sum(axis=1) > 0).astype(np.int64)
    arms = {**ARMS, **(BREAKDOWN_ARMS if args.breakdown else {})}
    best = {name: [float("inf"), float("inf")] for name in arms}
    with tempfile.TemporaryDirectory() as root:
        timed(x, y, 1, f"{root}/warmup", ARMS["off"])  # TensorFlow's own start-up costs
        for i in range(args.repeats):
            for name, arm in arms.items():
                wall, cpu = timed(x, y, args.epochs, f"{root}/{name}{i}", arm)
                print(f"  repeat {i + 1} {name:>15}: wall {wall:.3f} s, cpu {cpu:.3f} s")
                best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    samples = args.rows // 32 * 32 * args.epochs
    off_wall, off_cpu = best["off"]
    for name, (wall, cpu) in best.items():
        print(f"{name:>15}: best wall {wall:.3f} s ({samples / wall:,.0f} samples/s), "
              f"best cpu {cpu:.3f} s; vs off: wall {wall / off_wall - 1:+.1%}, "
              f"cpu {cpu / off_cpu - 1:+.1%}")
    print(f"cost of full logging: {best['on'][0] / off_wall - 1:+.1%} of training time "
          f"(wall), {best['on'][1] / off_cpu - 1:+.1%} (process CPU time)")


if __name__ == "__main__":
    main()
