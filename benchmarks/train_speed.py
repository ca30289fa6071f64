"""Training speed: model.fit vs a bare GradientTape loop vs tfkit.train, side by side.

Every variant trains the same Keras model (built fresh from the same seed) on
the same synthetic data with the same batch size, optimizer and epochs, in one
process. Each is timed end to end (model building, tracing and all epochs) and
repeated; the best of each is reported, with ratios measured in the same run.

    python benchmarks/train_speed.py                  # every workload, full size
    python benchmarks/train_speed.py --quick          # a short smoke run
    python benchmarks/train_speed.py --memory         # peak host memory, one child per variant
    python benchmarks/train_speed.py --options        # also each of tfkit's step options off

See benchmarks/README.md for what each variant is.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit.distribute import onednn_kernels  # noqa: E402

SEED = 1234
LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    rows: int  # training rows; a multiple of the batch so every variant runs the same steps
    batch_size: int
    epochs: int
    input_shape: tuple[int, ...]
    classes: int
    what: str
    conv_widths: tuple[int, ...] = ()  # channels of the two conv layers; empty for the MLP


WORKLOADS = {
    "mlp": Workload("mlp", 32_768, 32, 5, (20,), 2, "MLP 20-64-64-2, batch 32 (overhead-bound)"),
    "cnn": Workload("cnn", 8_192, 128, 2, (28, 28, 1), 10,
                    "CNN 28x28x1, conv32-pool-conv64-pool-dense64-10, batch 128 "
                    "(compute-bound)", conv_widths=(32, 64)),
    # The same shape with twice the channels: its time goes to large convolutions rather
    # than to the 1-channel first layer and the pooling gradients.
    "cnn_wide": Workload("cnn_wide", 8_192, 128, 2, (28, 28, 1), 10,
                         "CNN 28x28x1, conv64-pool-conv128-pool-dense64-10, batch 128 "
                         "(compute-bound)", conv_widths=(64, 128)),
}
QUICK_ROWS = {"mlp": 4_096, "cnn": 1_024, "cnn_wide": 1_024}


def build_model(workload: Workload) -> keras.Model:
    """The workload's model, initialised from SEED (identical for every variant)."""
    keras.utils.set_random_seed(SEED)
    if not workload.conv_widths:
        layers = [
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
        ]
    else:
        layers = [
            keras.layers.Conv2D(workload.conv_widths[0], 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(workload.conv_widths[1], 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
        ]
    head = keras.layers.Dense(workload.classes, activation="softmax")
    return keras.Sequential([keras.Input(workload.input_shape), *layers, head], name=workload.name)


def make_data(workload: Workload, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic, learnable data (no downloads).

    MLP: labels from a fixed random linear teacher plus noise. CNN: each class
    is a fixed smooth 28x28 template (7x7 noise scaled up 4x), seen through noise.
    """
    rng = np.random.default_rng(seed)
    if workload.conv_widths:
        coarse = np.random.default_rng(99).standard_normal((workload.classes, 7, 7, 1))
        templates = np.kron(coarse, np.ones((1, 4, 4, 1))).astype(np.float32)
        y = rng.integers(0, workload.classes, rows)
        x = 0.5 * templates[y] + rng.standard_normal((rows, 28, 28, 1), dtype=np.float32)
        return x.astype(np.float32), y.astype(np.int64)
    x = rng.standard_normal((rows, *workload.input_shape), dtype=np.float32)
    teacher = np.random.default_rng(99).standard_normal(
        (int(np.prod(workload.input_shape)), workload.classes)
    ).astype(np.float32)
    logits = x.reshape(rows, -1) @ teacher / np.sqrt(teacher.shape[0])
    logits += 0.5 * rng.standard_normal(logits.shape).astype(np.float32)
    return x, logits.argmax(axis=1).astype(np.int64)


def compile_model(model: keras.Model, steps_per_execution: int = 1) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        steps_per_execution=steps_per_execution,
    )


# --- the variants: each builds its model, trains, and returns a Run --------------------------


@dataclasses.dataclass
class Run:
    loss: float  # mean training loss of the last epoch, as the variant itself reports it
    model: keras.Model
    steady: float | None = None  # samples/s of the last epoch (no tracing), where reported


def run_fit(workload: Workload, x, y, epochs: int, steps_per_execution: int = 1):
    model = build_model(workload)
    compile_model(model, steps_per_execution)
    history = model.fit(x, y, batch_size=workload.batch_size, epochs=epochs, verbose=0)
    return Run(history.history["loss"][-1], model)


def run_fit_spe32(workload: Workload, x, y, epochs: int):
    return run_fit(workload, x, y, epochs, steps_per_execution=32)


def run_tape(workload: Workload, x, y, epochs: int):
    """The loop most tutorials show: one tf.function call per batch, no strategy."""
    model = build_model(workload)
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    loss_sum = tf.Variable(0.0)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        loss_sum.assign_add(loss)

    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=SEED)
        .batch(workload.batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    for _ in range(epochs):
        loss_sum.assign(0.0)
        steps = 0
        for xb, yb in dataset:
            train_step(xb, yb)
            steps += 1
    return Run(float(loss_sum.numpy()) / steps, model)


def tfkit_runner(**extra: Any) -> Callable:
    """tfkit.train with its defaults and TensorBoard logging on (a fresh temp logdir)."""

    def run(workload: Workload, x, y, epochs: int):
        logdir = tempfile.mkdtemp(prefix="tfkit-bench-")
        try:
            result = tfkit.train(
                (x, y), model=lambda spec: build_model(workload), task="multiclass",
                epochs=epochs, batch_size=workload.batch_size, learning_rate=LEARNING_RATE,
                optimizer="adam", validation_split=0.0, strategy="cpu", logdir=logdir,
                export=None, verbose=False, seed=SEED, **extra,
            )
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
        history = result.history
        return Run(history["loss"][-1], result.model, result.stats["samples_per_second"][-1])

    return run


# Each of tfkit's step options (tfkit/options.py) switched off alone, and all of them.
OPTIONS_OFF = {
    "tfkit_spe1": {"steps_per_execution": 1},
    "tfkit_streamed": {"in_memory_input": False},
    "tfkit_unfused": {"fused_update": False},
    "tfkit_no_hist": {"histogram_every_steps": 0},
    "tfkit_plain": {"steps_per_execution": 1, "in_memory_input": False, "fused_update": False,
                    "histogram_every_steps": 0},
}
VARIANTS: dict[str, Callable] = {
    "fit": run_fit,
    "fit_spe32": run_fit_spe32,
    "tape": run_tape,
    "tfkit": tfkit_runner(),
    "tfkit_xla": tfkit_runner(jit_compile=True),
    **{name: tfkit_runner(**off) for name, off in OPTIONS_OFF.items()},
}
XLA_VARIANT = "tfkit_xla"
LABELS = {
    "fit": "model.fit (steps_per_execution=1)",
    "fit_spe32": "model.fit (steps_per_execution=32)",
    "tape": "bare GradientTape loop",
    "tfkit": "tfkit.train (defaults, logdir on)",
    XLA_VARIANT: "tfkit.train (jit_compile=True)",
    "tfkit_spe1": "tfkit.train, one step per call",
    "tfkit_streamed": "tfkit.train, input iterator",
    "tfkit_unfused": "tfkit.train, Keras's Adam update",
    "tfkit_no_hist": "tfkit.train, no kept gradient",
    "tfkit_plain": "tfkit.train, every option off",
}


def eval_loss(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy on held-out data: the same yardstick for every variant."""
    probs = model.predict(x, batch_size=1024, verbose=0)
    return float(keras.losses.SparseCategoricalCrossentropy()(y, probs))


# --- FLOPs ---------------------------------------------------------------------------------


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs per example for Conv2D and Dense layers (2 per multiply-add).

    Bias adds, activations and pooling are left out (a few percent at most).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * c_out * kh * kw * c_in
        elif isinstance(layer, keras.layers.Dense):
            fan_in, fan_out = layer.kernel.shape
            total += 2 * fan_in * fan_out
    return total


def matmul_flops_per_second(n: int, repeats: int) -> float:
    """Best-of-N FLOP/s of an n x n float32 matmul in a tf.function (2 n^3 FLOPs)."""
    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.linalg.matmul(a, b)))
    matmul(a, b).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


# --- speed -----------------------------------------------------------------------------------


def time_variants(workload, variants, x, y, x_eval, y_eval, epochs, repeats) -> dict[str, dict]:
    """Round-robin over the variants `repeats` times (so noise hits all alike); best of each."""
    results = {name: {"seconds": [], "steady": []} for name in variants}
    for rep in range(repeats):
        for name in variants:
            # The previous run's traced graphs are garbage now; collecting them can take
            # seconds, so do it here rather than wherever it would fall in the next run.
            gc.collect()
            started = time.perf_counter()
            run = VARIANTS[name](workload, x, y, epochs)
            seconds = time.perf_counter() - started
            results[name]["seconds"].append(seconds)
            if run.steady:
                results[name]["steady"].append(run.steady)
            if rep == 0:
                results[name]["loss"] = float(run.loss)
                results[name]["eval_loss"] = eval_loss(run.model, x_eval, y_eval)
            print(f"  {workload.name} {name:10s} run {rep + 1}/{repeats}: {seconds:7.2f} s",
                  flush=True)
            del run
            keras.backend.clear_session()
    samples = len(x) // workload.batch_size * workload.batch_size * epochs
    for result in results.values():
        result["best_seconds"] = min(result["seconds"])
        result["samples_per_second"] = samples / result["best_seconds"]
        result["best_steady"] = max(result["steady"], default=None)
    return results


def print_table(workload, results, epochs, rows) -> None:
    base = results["fit"]["samples_per_second"]
    spe = results["fit_spe32"]["samples_per_second"]
    print(f"\n{workload.what}: {rows} rows x {epochs} epochs, best of "
          f"{len(results['fit']['seconds'])}")
    print("| variant | best s | samples/s | vs fit | vs fit spe32 | final epoch loss | "
          "held-out loss |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        sps = r["samples_per_second"]
        print(f"| {LABELS[name]} | {r['best_seconds']:.2f} | {sps:,.0f} | {sps / base:.2f}x | "
              f"{sps / spe:.2f}x | {r['loss']:.4f} | {r['eval_loss']:.4f} |")


def speed(args, workloads) -> dict:
    out = {}
    for name in workloads:
        workload = WORKLOADS[name]
        rows = QUICK_ROWS[name] if args.quick else workload.rows
        epochs = args.epochs or (1 if args.quick else workload.epochs)
        x, y = make_data(workload, rows, seed=0)
        x_eval, y_eval = make_data(workload, 4_096, seed=1)
        variants = ["fit", "fit_spe32", "tape", "tfkit"] + [XLA_VARIANT] * args.xla + (
            list(OPTIONS_OFF) if args.options else [])
        print(f"\n== {workload.what}", flush=True)
        results = time_variants(workload, variants, x, y, x_eval, y_eval, epochs, args.repeats)
        print_table(workload, results, epochs, rows)
        out[name] = {"rows": rows, "epochs": epochs, "results": results}
        if workload.conv_widths:
            out[name]["flops"] = flops_report(workload, results, args)
    return out


def best_matmul(sizes: list[int], repeats: int) -> tuple[float, int]:
    """The best matmul FLOP/s over the sizes, and the size that gave it.

    No single size is best for both kernel libraries: measured here, Eigen peaked at
    1024-2048 (114-139 GFLOP/s) and fell to 84 at 4096; oneDNN was best at 2048 or 4096 (up to 174).
    """
    return max((matmul_flops_per_second(n, repeats), n) for n in sizes)


def matmul_in_child(sizes: list[int], repeats: int, onednn: bool) -> tuple[float, int]:
    """`best_matmul` in a fresh process with oneDNN kernels switched on or off."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
    command = [sys.executable, os.path.abspath(__file__), "--matmul-child", str(repeats),
               *map(str, sizes)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    rate, n = done.stdout.strip().splitlines()[-1].split()
    return float(rate), int(n)


def flops_report(workload, results, args) -> dict:
    """The CNN's FLOP/s against a large matmul: in this process, and the best either kernel
    library reaches on this machine (a child process each, since oneDNN is fixed at import)."""
    forward = forward_flops(build_model(workload))
    train = 3 * forward
    sizes = [1024] if args.quick else args.matmul_sizes
    repeats = 3 if args.quick else 10
    here, here_n = best_matmul(sizes, repeats)
    children = {on: matmul_in_child(sizes, repeats, on) for on in (False, True)}
    best = max(here, *(rate for rate, _ in children.values()))
    print(f"\nCNN FLOPs per example: forward {forward / 1e6:.2f} M, training (3x forward) "
          f"{train / 1e6:.2f} M")
    print(f"float32 n x n matmul, best over n in {sizes}, best of {repeats} each: this process "
          f"(oneDNN {'on' if onednn_kernels() else 'off'}) {here / 1e9:.1f} GFLOP/s (n={here_n});"
          " fresh processes: " + ", ".join(
              f"oneDNN {'on' if on else 'off'} {rate / 1e9:.1f} (n={n})"
              for on, (rate, n) in children.items()))
    report = {"forward_flops": forward, "train_flops": train, "matmul_sizes": sizes,
              "matmul_flops_per_second": here, "matmul_onednn_off": children[False][0],
              "matmul_onednn_on": children[True][0], "matmul_best": best}
    for name, r in results.items():
        rates = {"end to end": r["samples_per_second"] * train}
        r["flops_per_second"] = rates["end to end"]
        if r["best_steady"]:
            rates["last epoch only, no tracing"] = r["steady_flops_per_second"] = (
                r["best_steady"] * train)
        for what, rate in rates.items():
            print(f"  {LABELS[name]:38s} {rate / 1e9:6.1f} GFLOP/s = {rate / here:5.1%} of this "
                  f"process's matmul, {rate / best:5.1%} of the best ({what})")
    return report


# --- memory: one child process per variant, since ru_maxrss only ever grows -----------------


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(args) -> None:
    workload = WORKLOADS[args.child[0]]
    variant = args.child[1]
    rows = QUICK_ROWS[workload.name] if args.quick else workload.rows
    epochs = args.epochs or (1 if args.quick else workload.epochs)
    x, y = make_data(workload, rows, seed=0)
    if variant != "baseline":
        VARIANTS[variant](workload, x, y, epochs)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def memory(args, workloads) -> dict:
    out = {}
    for name in workloads:
        out[name] = {}
        for variant in ("baseline", "fit", "tfkit") + ("tfkit_unfused",) * args.options:
            command = [sys.executable, os.path.abspath(__file__), "--child", name, variant]
            command += ["--quick"] if args.quick else []
            command += ["--epochs", str(args.epochs)] if args.epochs else []
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            out[name][variant] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        fit, tk, base = out[name]["fit"], out[name]["tfkit"], out[name]["baseline"]
        print(f"\n{name}: peak host RSS (VmHWM), one process each: baseline (imports + data) "
              f"{base:.0f} MB, model.fit {fit:.0f} MB, tfkit.train {tk:.0f} MB "
              f"-> tfkit/fit = {tk / fit:.3f} (above baseline: fit {fit - base:.0f} MB, "
              f"tfkit {tk - base:.0f} MB)", flush=True)
        if args.options:
            print(f"{name}: with Keras's Adam update (fused_update=False) "
                  f"{out[name]['tfkit_unfused']:.0f} MB", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant; best kept")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the workloads' epochs (mlp 5, both CNNs 2)")
    parser.add_argument("--quick", action="store_true", help="small data, 1 epoch: a smoke run")
    parser.add_argument("--xla", action="store_true",
                        help="also time tfkit.train(jit_compile=True)")
    parser.add_argument("--options", action="store_true",
                        help="also time tfkit.train with each step option off (tfkit/options.py)")
    parser.add_argument("--memory", action="store_true",
                        help="peak host memory of model.fit vs tfkit.train (a child each)")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--matmul-child", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.matmul_child:
        rate, n = best_matmul(args.matmul_child[1:], args.matmul_child[0])
        print(rate, n)
        return
    if args.child:
        child(args)
        return
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPU cores, oneDNN kernels "
          f"{'on' if onednn_kernels() else 'off'}, tfkit from {os.path.dirname(tfkit.__file__)}")
    report = {"tensorflow": tf.__version__, "keras": keras.__version__,
              "cores": os.cpu_count(), "onednn": onednn_kernels(), "argv": sys.argv[1:]}
    if args.quick:
        args.repeats = min(args.repeats, 1)
    if args.memory:
        report["memory"] = memory(args, workloads)
    else:
        report["speed"] = speed(args, workloads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
