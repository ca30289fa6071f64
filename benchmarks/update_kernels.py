"""Adam's update for one weight: TensorFlow's fused kernel against Keras-style separate ops.

Why tfkit/updates.py sends only some weight sizes to `ResourceApplyAdam` on a
CPU: below a few hundred floats the kernel runs on the calling thread; above
that it splits the weight across every thread, which costs more than it saves
until the weight is large.

    python benchmarks/update_kernels.py                 # default sizes
    python benchmarks/update_kernels.py 256 4096 65536  # chosen sizes
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

SIZES = [64, 256, 1024, 4096, 16_384, 65_536, 1 << 20]
B1, B2, LR, EPS = 0.9, 0.999, 1e-3, 1e-7


def updater(kind: str, size: int):
    """A tf.function running n Adam updates of one weight of `size` floats."""
    var, m, v = (tf.Variable(tf.random.uniform([size])) for _ in range(3))
    grad = tf.random.normal([size])

    def fused() -> None:
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=B1, beta2_power=B2, lr=LR,
            beta1=B1, beta2=B2, epsilon=EPS, grad=grad)

    def separate() -> None:  # Keras 3's Adam.update_step, with the step size precomputed
        m.assign_add((grad - m) * (1 - B1))
        v.assign_add((tf.square(grad) - v) * (1 - B2))
        var.assign_sub(m * LR / (tf.sqrt(v) + EPS))

    @tf.function
    def run(n: tf.Tensor) -> tf.Tensor:
        for _ in tf.range(n):
            fused() if kind == "fused" else separate()
        return var[0]

    run(tf.constant(3))  # trace
    return run


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or SIZES
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} cores; µs per update, best of 5")
    print("| floats | fused kernel | separate ops |\n|---:|---:|---:|")
    for size in sizes:
        n = max(20, min(2000, 2_000_000 // size))
        runs = {kind: updater(kind, size) for kind in ("fused", "separate")}
        best = {kind: float("inf") for kind in runs}
        for _ in range(5):  # interleaved, so load from other processes hits both alike
            for kind, run in runs.items():
                started = time.perf_counter()
                run(tf.constant(n)).numpy()
                best[kind] = min(best[kind], (time.perf_counter() - started) / n * 1e6)
        print(f"| {size:,} | {best['fused']:.1f} | {best['separate']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
