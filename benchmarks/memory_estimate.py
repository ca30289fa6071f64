"""tfkit.estimate_memory against the measured growth of peak host memory while training.

Each size runs in its own process (peak RSS only ever grows within one):
baseline = resident memory after TensorFlow, the data and the first eager ops
are up; growth = peak RSS at the end of training - baseline.

    python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure(width: int, features: int, batch: int) -> dict:
    import numpy as np

    import tfkit
    from tfkit import memory

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 4, features)).astype(np.float32)
    y = rng.integers(0, 2, size=len(x))
    memory.estimate_memory  # noqa: B018  (import TensorFlow's pieces before the baseline)
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # start the runtime
    baseline = memory.current_host_bytes()
    result = tfkit.train(
        (x, y), model="mlp", model_kwargs={"hidden": (width, width)}, epochs=1,
        batch_size=batch, validation_split=0.0, strategy="cpu", logdir=None, export=None,
        verbose=False, histogram_every_steps=0,
    )
    grown = memory.peak_host_bytes() - baseline
    estimate = tfkit.estimate_memory(result.model, batch, "adam")
    return {
        "width": width, "parameters": result.model.count_params(),
        "parameter_mb": estimate.parameters / 2**20, "estimate_mb": estimate.total / 2**20,
        "measured_growth_mb": grown / 2**20, "estimate_over_measured": estimate.total / grown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", default="2048,4096,6144")
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.features, args.batch)))
        return
    print(f"{'width':>6} {'params':>11} {'param MB':>9} {'estimate MB':>12} "
          f"{'measured MB':>12} {'estimate/measured':>18}")
    for width in map(int, args.widths.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(width), "--features", str(args.features),
             "--batch", str(args.batch)], capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(f"{row['width']:>6} {row['parameters']:>11,} {row['parameter_mb']:>9.1f} "
              f"{row['estimate_mb']:>12.1f} {row['measured_growth_mb']:>12.1f} "
              f"{row['estimate_over_measured']:>18.2f}")


if __name__ == "__main__":
    main()
