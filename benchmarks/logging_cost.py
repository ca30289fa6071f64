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

`--writer-only` times the event files alone: one logged run's events (the
first run's, written once) are written again through `tfkit.summaries.EventFile`
`--repeats` times, by wall clock and process CPU time, the writer's threads
included. Run it with another tfkit on PYTHONPATH to compare two writers.

    python benchmarks/logging_cost.py --repeats 7 --epochs 5
    python benchmarks/logging_cost.py --repeats 5 --epochs 10 --breakdown
    python benchmarks/logging_cost.py --repeats 20 --epochs 5 --writer-only
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import statistics
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


def writer_only(x, y, epochs: int, repeats: int) -> None:
    """Writes one logged run's events again and again through EventFile, timed."""
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2

    from tfkit.summaries import EventFile

    with tempfile.TemporaryDirectory() as root:
        timed(x, y, epochs, f"{root}/run", ARMS["on"])
        paths = glob.glob(f"{root}/run/logs/**/events.out.tfevents.*", recursive=True)
        events = [event_pb2.Event.FromString(record.numpy())
                  for path in paths for record in tf.data.TFRecordDataset(path)]
        events = [e for e in events if not e.file_version]  # each file writes its own header
        sizes = [e.ByteSize() for e in events]
        print(f"{len(events)} events, {sum(sizes):,} bytes, largest {max(sizes):,}")
        walls, cpus, calls = [], [], []
        for i in range(repeats):
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            writer = EventFile(f"{root}/replay{i}")
            for event in events:
                writer.add(lambda event=event: [event])
            queued = time.perf_counter() - wall  # what the training thread waits for
            writer.close()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            calls.append(queued)
            written = sum(os.path.getsize(p) for p in glob.glob(f"{root}/replay{i}/*"))
        print(f"per run's events ({written:,} bytes in the file): median wall "
              f"{statistics.median(walls) * 1e3:.1f} ms, median CPU "
              f"{statistics.median(cpus) * 1e3:.1f} ms (best {min(cpus) * 1e3:.1f}), "
              f"median time in add() {statistics.median(calls) * 1e3:.2f} ms, "
              f"{repeats} repeats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=32_768)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--writer-only", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, 20)).astype(np.float32)
    y = (x[:, :10].sum(axis=1) > 0).astype(np.int64)
    if args.writer_only:
        writer_only(x, y, args.epochs, args.repeats)
        return
    arms = {**ARMS, **(BREAKDOWN_ARMS if args.breakdown else {})}
    walls: dict[str, list[float]] = {name: [] for name in arms}
    cpus: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as root:
        timed(x, y, 1, f"{root}/warmup", ARMS["off"])  # TensorFlow's own start-up costs
        for i in range(args.repeats):
            for name, arm in arms.items():
                wall, cpu = timed(x, y, args.epochs, f"{root}/{name}{i}", arm)
                print(f"  repeat {i + 1} {name:>15}: wall {wall:.3f} s, cpu {cpu:.3f} s")
                walls[name].append(wall)
                cpus[name].append(cpu)
    samples = args.rows // 32 * 32 * args.epochs
    for name in arms:
        wall, cpu = min(walls[name]), min(cpus[name])
        # Each repeat runs the arms back to back: the ratio within a repeat cancels slow drift.
        pairs = zip(walls[name], walls["off"], strict=True)
        paired = statistics.median(w / off for w, off in pairs)
        print(f"{name:>15}: best wall {wall:.3f} s ({samples / wall:,.0f} samples/s), "
              f"best cpu {cpu:.3f} s; vs off: best wall {wall / min(walls['off']) - 1:+.1%}, "
              f"best cpu {cpu / min(cpus['off']) - 1:+.1%}, median of paired walls "
              f"{paired - 1:+.1%}")
    on_paired = statistics.median(w / off for w, off in zip(walls["on"], walls["off"], strict=True))
    print(f"cost of full logging: {min(walls['on']) / min(walls['off']) - 1:+.1%} of training "
          f"time (best wall), {min(cpus['on']) / min(cpus['off']) - 1:+.1%} (best process CPU "
          f"time), {on_paired - 1:+.1%} (median of the {args.repeats} paired runs)")

if __name__ == "__main__":
    main()
