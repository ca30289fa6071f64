"""CPU, GPU, TPU and memory: where training runs, what it needs, and how long it would take.

The same training step runs on one CPU, on several replicas, on a GPU or a
TPU; tf.distribute decides where each piece runs. What limits a model is
first memory (does one step fit?) and then arithmetic (how many steps per
hour?). This lesson:

    1. lists the devices here and the strategy tfkit's "auto" picks, and why;
    2. trains the same model on one CPU device and on two CPU replicas (cpu:2);
    3. estimates the memory of the tiny GPT made wider and deeper, and measures it;
    4. shows what running out of memory looks like, and what to change;
    5. measures this machine's FLOP/s and extrapolates a GPT-2-sized and a
       ResNet-50-sized training run, here and on one modern GPU.

Run:  tfkit tutorial 4 [--fast]
  or  python tfkit/lessons/04_cpu_gpu_tpu_and_memory.py [--fast] [--workdir DIR]
"""

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import tensorflow as tf  # noqa: E402

import tfkit  # noqa: E402
from tfkit import datasets, memory, text  # noqa: E402

SEED = 0
RUN_GROUP = "04_cpu_gpu_tpu_and_memory"
CONTEXT, MEMORY_BATCH = 64, 8
MODULES = ["argparse", "collections", "functools", "json", "logging", "os", "re", "string"]
# The tiny GPT made wider and deeper: (width, layers).
SIZES = {"fast": [(64, 2), (256, 4)], "full": [(64, 2), (128, 2), (256, 4), (512, 6)]}
# Assumptions of the extrapolation: stated, not measured here.
GPU_NAME, GPU_PEAK, GPU_UTILIZATION = "NVIDIA A100", 312e12, 0.40  # dense bf16 peak
GPT2_PARAMETERS, GPT2_TOKENS = 124e6, 10e9  # GPT-2 small, 10B tokens of training
RESNET50_FORWARD, IMAGENET_IMAGES, RESNET50_EPOCHS = 4.1e9, 1.281e6, 90


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer and smaller runs")
    parser.add_argument("--workdir", default=".", help="tensorboard_logs/ is written here")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)  # replicas | memory W L
    return parser.parse_args()


def small_corpus(characters: int) -> text.Corpus:
    joined = "\n\n".join(text.python_docstrings(MODULES).documents)
    return text.Corpus("docstrings", (joined[:characters],))


# --- Children: each starts TensorFlow afresh --------------------------------------------------

def penguins_run(logdir: str, strategy: str, epochs: int) -> dict:
    result = tfkit.train(
        "penguins", model="mlp", epochs=epochs, batch_size=32, seed=SEED, strategy=strategy,
        logdir=logdir, run_name=strategy.replace(":", "_"), resume=False, export=None,
        verbose=False, histogram_every_steps=0,
    )
    return {"replicas": result.strategy.num_replicas_in_sync, "loss": result.history["loss"],
            "samples_per_second": result.stats["samples_per_second"][-1]}


def measure_memory(width: int, layers: int) -> dict:
    """Peak resident memory grown while training two steps, against the estimate."""
    corpus = small_corpus(2 * MEMORY_BATCH * CONTEXT + 1)  # exactly two batches
    tf.constant(1.0) + 1.0  # start the runtime before the baseline
    baseline = memory.current_host_bytes()
    result = tfkit.train(
        corpus, model="transformer", window=CONTEXT, model_kwargs={"width": width,
        "heads": 4, "layers": layers}, epochs=1, batch_size=MEMORY_BATCH,
        validation_split=0.0, strategy="cpu", logdir=None, export=None, verbose=False,
    )
    grown = memory.peak_host_bytes() - baseline
    estimate = tfkit.estimate_memory(result.model, MEMORY_BATCH, "adam", sequence_length=CONTEXT)
    return {"width": width, "layers": layers, "parameters": result.model.count_params(),
            "estimate": estimate.total, "measured": grown}


def run_child(args: list[str], workdir: str) -> None:
    if args[0] == "replicas":  # cpu:2 must be chosen before TensorFlow starts: here, first
        out = penguins_run(os.path.join(workdir, "tensorboard_logs", RUN_GROUP), "cpu:2",
                           int(args[1]))
    else:
        out = measure_memory(int(args[1]), int(args[2]))
    print(json.dumps(out))


def start_child(args: list[str], workdir: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--workdir", workdir, "--child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_result(child: subprocess.Popen) -> dict:
    out, err = child.communicate()
    if child.returncode:
        raise RuntimeError(f"a child run failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


# --- Part 1 and 2: devices and replicas -------------------------------------------------------

def show_devices() -> None:
    found = tfkit.devices()
    print("Part 1. What is here (tfkit.devices(), or `tfkit devices` in a shell)")
    for kind, names in found["physical_devices"].items():
        print(f"  {kind}: {len(names)} {names}")
    print(f"  CPU cores: {found['cpu_cores']}; TF_CONFIG workers: {found['tf_config_workers']}; "
          f"TPU signs: {found['tpu_signs']}")
    print(f"  strategy='auto' picks {found['auto_picks']!r}. The rule, in order: several "
          "workers in TF_CONFIG → 'multi_worker'; a TPU → 'tpu'; two or more GPUs → "
          "'mirrored'; one GPU → 'gpu'; else 'cpu'.")
    print("  A TPU or GPU runs the same step; only where the variables live and how the "
          "gradients are summed changes.")


def compare_replicas(workdir: str, child: subprocess.Popen, epochs: int) -> None:
    one = penguins_run(os.path.join(workdir, "tensorboard_logs", RUN_GROUP), "cpu", epochs)
    two = child_result(child)
    print(f"\nPart 2. The penguins MLP, batch 32, {epochs} epochs, on one device and on two "
          "replicas")
    print("  cpu:2 splits this CPU into two logical devices; MirroredStrategy gives each "
          "replica 16 of the 32 rows, and the gradients are summed across replicas before "
          "the one update.")
    for name, run in (("cpu", one), ("cpu:2", two)):
        losses = " ".join(f"{loss:.5f}" for loss in run["loss"])
        print(f"  {name:<6} replicas {run['replicas']}  loss per epoch {losses}  "
              f"{run['samples_per_second']:,.0f} samples/s")
    gap = max(abs(a - b) for a, b in zip(one["loss"], two["loss"], strict=True))
    print(f"  largest loss difference: {gap:.1e} — the same training, split differently.")
    print("  Not faster here: both replicas share the same 2 cores, and one device already "
          "uses both. Replicas pay off when each has its own GPU or TPU core.")


# --- Part 3 and 4: memory ---------------------------------------------------------------------

def compare_memory(children: list[subprocess.Popen]) -> None:
    print(f"\nPart 3. The tiny GPT made wider and deeper: tfkit.estimate_memory at batch "
          f"{MEMORY_BATCH}, context {CONTEXT}, Adam, against the growth of peak memory while "
          "training (each size in a fresh process)")
    print(f"  {'width':>5} {'layers':>6} {'parameters':>11} {'estimate MB':>12} "
          f"{'measured MB':>12} {'estimate/measured':>18}")
    for row in map(child_result, children):
        print(f"  {row['width']:>5} {row['layers']:>6} {row['parameters']:>11,} "
              f"{row['estimate'] / 2**20:>12.1f} {row['measured'] / 2**20:>12.1f} "
              f"{row['estimate'] / row['measured']:>18.2f}")
    print("  Parameters grow with width² × layers, and with them gradients and Adam's two\n"
          "  slots: four copies of the weights before a single activation. The estimate\n"
          "  leaves out TensorFlow's own working memory (compiled graphs, thread pools, tens\n"
          "  of MB), so it is low for small models and closer as the weights dominate.")


def gpt2_shaped() -> tuple:
    """GPT-2 small's shape (width 768, 12 heads, 12 layers, context 1024) on characters."""
    spec = text.prepare_text(small_corpus(4 * 1025), context=1024).spec
    model = tfkit.models.build("transformer", spec, width=768, heads=12, layers=12, context=1024)
    return model, tfkit.estimate_memory(model, 8, "adam", sequence_length=1024)


def show_out_of_memory(estimate: tfkit.MemoryEstimate, parameters: int) -> None:
    scores = 12 * 12 * 1024 * 1024 * 4 * estimate.batch_size  # layers x heads x T x T, float32
    print(f"\nPart 4. Out of memory. A GPT-2-shaped model (width 768, 12 layers, context 1024, "
          f"97 characters instead of 50,257 tokens): {parameters:,} parameters.")
    print(f"  {estimate.describe()}")
    print(f"  Not counted: the attention scores, 12 heads × 1024 × 1024 per layer, another "
          f"{scores / 2**30:.1f} GB at batch 8. It fits this machine's RAM; a smaller GPU not.")
    error = tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[8,1024,3072] and type float on "
        "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")
    for gigabytes in (4, 1):
        small = dataclasses.replace(estimate, available=gigabytes * 2**30)
        print(f"\n  SIMULATED — this machine has {memory.device_memory_limit() / 2**30:.0f} GB "
              f"and no GPU; here is what tfkit.train raises on a {gigabytes} GB GPU:")
        try:
            raise tfkit.OutOfMemoryError(memory.out_of_memory_message(small, error))
        except tfkit.OutOfMemoryError as err:
            print(f"  tfkit.OutOfMemoryError: {err}")
    print("\n  The fixes, cheapest first: a smaller batch_size (activations shrink with it);\n"
          "  mixed_precision='mixed_float16' or 'mixed_bfloat16' (activations in half the\n"
          "  bytes); optimizer='sgd' (one slot instead of Adam's two); a narrower or shallower\n"
          "  model; several devices (each replica holds the batch's share of activations).")


# --- Part 5: FLOP/s and the extrapolation -----------------------------------------------------

def achieved_flops(logdir: str, data, model: str, kwargs: dict, window) -> float:
    """Samples/s of the second epoch (the first includes tracing) × 3 forward passes."""
    result = tfkit.train(data, model=model, model_kwargs=kwargs, window=window, epochs=2,
                         batch_size=32, seed=SEED, strategy="cpu", validation_split=0.0,
                         logdir=logdir, run_name=f"flops_{model}", resume=False, export=None,
                         verbose=False, histogram_every_steps=0)
    speed = result.stats["samples_per_second"][-1]
    rate = speed * 3 * tfkit.models.flops_per_example(result.model, sequence_length=window)
    print(f"  {model} {kwargs}: {speed:,.0f} samples/s × 3 × forward FLOPs = "
          f"{rate / 1e9:.1f} GFLOP/s")
    return rate


def duration(flops: float, rate: float) -> str:
    days = flops / rate / 86400
    if days > 365:
        return f"{days:,.0f} days ({days / 365:,.0f} years)"
    return f"{days:,.1f} days" if days > 1 else f"{days * 24:,.1f} hours"


def extrapolate(logdir: str, fast: bool) -> None:
    print("\nPart 5. This machine's measured FLOP/s (training through tfkit.train, one device)")
    gpt_rate = achieved_flops(logdir, small_corpus(96 * 65 if fast else 800 * 65),
                              "transformer", {"width": 128}, 64)
    images = datasets.make_images(160 if fast else 1280, size=16, seed=SEED)
    cnn_rate = achieved_flops(logdir, images, "resnet", {"width": 32}, None)
    gpu = GPU_PEAK * GPU_UTILIZATION
    gpt2 = 6 * GPT2_PARAMETERS * GPT2_TOKENS
    resnet50 = 3 * RESNET50_FORWARD * IMAGENET_IMAGES * RESNET50_EPOCHS
    print(f"""
  An extrapolation, not a measurement. Assumptions:
    - the rate measured above holds for a model 100-1000× bigger (bigger matrices use a
      CPU better, so this may be a few times pessimistic; this machine's 2 AVX2 cores
      peak near 100-150 GFLOP/s, an upper bound);
    - one {GPU_NAME}: {GPU_PEAK / 1e12:.0f} TFLOP/s dense bf16 peak at {GPU_UTILIZATION:.0%}
      achieved = {gpu / 1e12:.0f} TFLOP/s (typical of well-tuned large-model training);
    - training costs 3 forward passes: 6 FLOPs per parameter per token for a transformer.
  GPT-2 small ({GPT2_PARAMETERS / 1e6:.0f}M parameters) on {GPT2_TOKENS / 1e9:.0f}B tokens = \
{gpt2:.1e} FLOPs:
    here at {gpt_rate / 1e9:.1f} GFLOP/s: {duration(gpt2, gpt_rate)};  one GPU: \
{duration(gpt2, gpu)}.
  ResNet-50 ({RESNET50_FORWARD / 1e9:.1f} GFLOPs forward per 224×224 image) on ImageNet, \
{RESNET50_EPOCHS} epochs = {resnet50:.1e} FLOPs:
    here at {cnn_rate / 1e9:.1f} GFLOP/s: {duration(resnet50, cnn_rate)};  one GPU: \
{duration(resnet50, gpu)}.
  The gap is the reason GPUs and TPUs exist: the step is the same, the arithmetic is
  thousands of times faster.""")


def main() -> int:
    args = parse_args()
    if args.child:
        run_child(args.child, args.workdir)
        return 0
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    tf.get_logger().setLevel("ERROR")
    logdir = os.path.join(args.workdir, "tensorboard_logs", RUN_GROUP)
    shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves
    text.python_docstrings(MODULES)  # collect once, before the children read the cache
    epochs = 2 if args.fast else 10
    # The children run while this process works: they only measure their own memory.
    replicas = start_child(["replicas", str(epochs)], args.workdir)
    sizes = SIZES["fast" if args.fast else "full"]
    measured = [start_child(["memory", str(w), str(n)], args.workdir) for w, n in sizes]

    show_devices()
    compare_replicas(args.workdir, replicas, epochs)
    compare_memory(measured)
    model, estimate = gpt2_shaped()
    show_out_of_memory(estimate, model.count_params())
    del model
    extrapolate(logdir, args.fast)

    for name in ("cpu", "cpu_2", "flops_transformer", "flops_resnet"):
        print(f"Wrote: {os.path.join(logdir, name)}")
    print(f"Look at: tensorboard --logdir {logdir}")
    print("  Scalars → 'loss': the 'cpu' and 'cpu_2' curves lie on top of each other.")
    print("  Scalars → 'samples_per_second' of 'flops_…': the speeds the extrapolation used.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
