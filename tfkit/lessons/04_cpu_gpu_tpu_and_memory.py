# %% [markdown]
# # Lesson 4. CPU, GPU, TPU and memory: where training runs, what it needs, how long it takes
#
# The same training step runs on one CPU, on several replicas, on a GPU or a TPU;
# `tf.distribute` decides where each piece runs. What limits a model is first memory (does
# one step fit?) and then arithmetic (how many steps per hour?). This lesson:
#
# 1. lists the devices here and the strategy tfkit's `"auto"` picks, and why;
# 2. trains the same model on one CPU device and on two CPU replicas (`cpu:2`);
# 3. estimates the memory of the tiny GPT made wider and deeper, and measures it;
# 4. shows what running out of memory looks like, and what to change;
# 5. measures this machine's FLOP/s and extrapolates a GPT-2-sized and a ResNet-50-sized
#    training run, here and on one modern GPU.
#
# Also a script: `tfkit tutorial 4 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer and smaller runs).

# %%
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
from tfkit import datasets, memory, text, tutorials  # noqa: E402
from tfkit.lessons._fresh_process import MEMORY_BATCH, MODULES, small_corpus  # noqa: E402

FAST, WORKDIR = tutorials.setup()
try:  # two logical CPU devices for Part 2's cpu:2: TensorFlow cannot split one once it started
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
    pass  # this kernel already started TensorFlow (a cell run twice): it has its devices
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
tf.get_logger().setLevel("ERROR")
SEED = 0
EPOCHS = 2 if FAST else 10
# The tiny GPT made wider and deeper: (width, layers).
SIZES = [(256, 4)] if FAST else [(64, 2), (128, 2), (256, 4), (512, 6)]
logdir = os.path.join(WORKDIR, "tensorboard_logs", "04_cpu_gpu_tpu_and_memory")
shutil.rmtree(logdir, ignore_errors=True)  # a re-run replaces its old curves

# %% [markdown]
# Two CPU replicas must be chosen before TensorFlow starts: so the cell above split this CPU
# into two logical devices first thing. A peak of memory, measured in Part 3, is only one
# model's in a process that trained nothing else: those runs start now as fresh processes
# (`tfkit/lessons/_fresh_process.py`, read it) and work while this one goes on; each prints
# its result as one JSON line.

# %%
text.python_docstrings(MODULES)  # collect once, before the children read the cache


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tfkit.lessons._fresh_process", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(child: subprocess.Popen) -> dict:
    out, err = child.communicate()
    if child.returncode:
        raise RuntimeError(f"a child run failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


measured = [start("memory", str(width), str(layers)) for width, layers in SIZES]

# %% [markdown]
# ## Part 1. What is here
#
# `tfkit.devices()` (or `tfkit devices` in a shell). The rule `strategy="auto"` follows, in
# order: several workers in `TF_CONFIG` → `multi_worker`; a TPU → `tpu`; two or more GPUs →
# `mirrored`; one GPU → `gpu`; else `cpu`. A TPU or GPU runs the same step; only where the
# variables live and how the gradients are summed changes.

# %%
found = tfkit.devices()
for kind, names in found["physical_devices"].items():
    print(f"  {kind}: {len(names)} {names}")
print(f"  CPU cores: {found['cpu_cores']}; TF_CONFIG workers: {found['tf_config_workers']}; "
      f"TPU signs: {found['tpu_signs']}")
print(f"  strategy='auto' picks {found['auto_picks']!r}")

# %% [markdown]
# ## Part 2. One device and two replicas
#
# The penguins MLP, batch 32, on one device (`strategy="cpu"`) and on two replicas
# (`strategy="cpu:2"`). `cpu:2` splits this CPU into
# two logical devices; MirroredStrategy gives each replica 16 of the 32 rows, and the
# gradients are summed across replicas before the one update: the same training, split
# differently. Not faster here: both replicas share the same 2 cores, and one device already
# uses both. Replicas pay off when each has its own GPU or TPU core.

# %%
def penguins_run(strategy: str) -> dict:
    result = tfkit.train(
        "penguins", model="mlp", epochs=EPOCHS, batch_size=32, seed=SEED, strategy=strategy,
        logdir=logdir, run_name=strategy.replace(":", "_"), resume=False, export=None,
        verbose=False, histogram_every_steps=0,
    )
    return {"replicas": result.strategy.num_replicas_in_sync, "loss": result.history["loss"],
            "samples_per_second": result.stats["samples_per_second"][-1]}


one, two = penguins_run("cpu"), penguins_run("cpu:2")
for name, run in (("cpu", one), ("cpu:2", two)):
    losses = " ".join(f"{loss:.5f}" for loss in run["loss"])
    print(f"  {name:<6} replicas {run['replicas']}  loss per epoch {losses}  "
          f"{run['samples_per_second']:,.0f} samples/s")
gap = max(abs(a - b) for a, b in zip(one["loss"], two["loss"], strict=True))
print(f"  largest loss difference: {gap:.1e} — the same training, split differently.")

# %% [markdown]
# ## Part 3. Memory: estimated and measured
#
# `tfkit.estimate_memory` at batch 8, context 64, Adam, against the growth of peak memory
# while training, each size in a fresh process. Parameters grow with width² × layers, and with
# them gradients and Adam's two slots: four copies of the weights before a single activation.
# The estimate leaves out TensorFlow's own working memory (compiled graphs, thread pools, tens
# of MB), so it is low for small models and closer as the weights dominate.

# %%
print(f"  {'width':>5} {'layers':>6} {'parameters':>11} {'estimate MB':>12} "
      f"{'measured MB':>12} {'estimate/measured':>18}")
for row in map(result_of, measured):
    print(f"  {row['width']:>5} {row['layers']:>6} {row['parameters']:>11,} "
          f"{row['estimate'] / 2**20:>12.1f} {row['measured'] / 2**20:>12.1f} "
          f"{row['estimate'] / row['measured']:>18.2f}  (batch {MEMORY_BATCH})")

# %% [markdown]
# ## Part 4. Out of memory
#
# A GPT-2-shaped model: width 768, 12 heads, 12 layers, context 1024, on 97 characters
# instead of 50,257 tokens. Not counted in the estimate: the attention scores, 12 heads ×
# 1024 × 1024 per layer. It fits this machine's RAM; a smaller GPU not. This machine has no
# GPU, so the error is **simulated**: here is what `tfkit.train` raises on a 4 GB and a 1 GB
# GPU.

# %%
spec = text.prepare_text(small_corpus(4 * 1025), context=1024).spec
model = tfkit.models.build("transformer", spec, width=768, heads=12, layers=12, context=1024)
estimate = tfkit.estimate_memory(model, 8, "adam", sequence_length=1024)
scores = 12 * 12 * 1024 * 1024 * 4 * estimate.batch_size  # layers x heads x T x T, float32
print(f"{model.count_params():,} parameters. {estimate.describe()}")
print(f"Not counted: the attention scores, another {scores / 2**30:.1f} GB at batch 8.")
del model
error = tf.errors.ResourceExhaustedError(
    None, None, "OOM when allocating tensor with shape[8,1024,3072] and type float on "
    "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")
for gigabytes in (4, 1):
    small = dataclasses.replace(estimate, available=gigabytes * 2**30)
    print(f"\nSIMULATED — this machine has {memory.device_memory_limit() / 2**30:.0f} GB "
          f"and no GPU; on a {gigabytes} GB GPU:")
    try:
        raise tfkit.OutOfMemoryError(memory.out_of_memory_message(small, error))
    except tfkit.OutOfMemoryError as err:
        print(f"tfkit.OutOfMemoryError: {err}")

# %% [markdown]
# The fixes, cheapest first: a smaller `batch_size` (activations shrink with it);
# `mixed_precision="mixed_float16"` or `"mixed_bfloat16"` (activations in half the bytes);
# `optimizer="sgd"` (one slot instead of Adam's two); a narrower or shallower model; several
# devices (each replica holds the batch's share of activations).
#
# ## Part 5. This machine's FLOP/s, and an extrapolation
#
# Training through `tfkit.train` on one device: samples per second of the second epoch (the
# first includes tracing) × 3 forward passes' FLOPs.


# %%
def achieved_flops(data, model: str, kwargs: dict, window) -> float:
    result = tfkit.train(data, model=model, model_kwargs=kwargs, window=window, epochs=2,
                         batch_size=32, seed=SEED, strategy="cpu", validation_split=0.0,
                         logdir=logdir, run_name=f"flops_{model}", resume=False, export=None,
                         verbose=False, histogram_every_steps=0)
    speed = result.stats["samples_per_second"][-1]
    rate = speed * 3 * tfkit.models.flops_per_example(result.model, sequence_length=window)
    print(f"  {model} {kwargs}: {speed:,.0f} samples/s × 3 × forward FLOPs = "
          f"{rate / 1e9:.1f} GFLOP/s")
    return rate


gpt_rate = achieved_flops(small_corpus(96 * 65 if FAST else 800 * 65), "transformer",
                          {"width": 128}, 64)
images = datasets.make_images(160 if FAST else 1280, size=16, seed=SEED)
cnn_rate = achieved_flops(images, "resnet", {"width": 32}, None)

# %% [markdown]
# An extrapolation, not a measurement. Its assumptions:
#
# - the rate measured above holds for a model 100-1000× bigger (bigger matrices use a CPU
#   better, so this may be a few times pessimistic; 2 AVX2 cores peak near 100-150 GFLOP/s);
# - one NVIDIA A100: 312 TFLOP/s dense bf16 peak at 40 % achieved (typical of well-tuned
#   large-model training);
# - training costs 3 forward passes: 6 FLOPs per parameter per token for a transformer.


# %%
def duration(flops: float, rate: float) -> str:
    days = flops / rate / 86400
    if days > 365:
        return f"{days:,.0f} days ({days / 365:,.0f} years)"
    return f"{days:,.1f} days" if days > 1 else f"{days * 24:,.1f} hours"


gpu = 312e12 * 0.40
gpt2 = 6 * 124e6 * 10e9  # GPT-2 small, 124M parameters, on 10B tokens
resnet50 = 3 * 4.1e9 * 1.281e6 * 90  # 4.1 GFLOPs forward per image, ImageNet, 90 epochs
print(f"GPT-2 small (124M parameters) on 10B tokens = {gpt2:.1e} FLOPs:\n"
      f"    here at {gpt_rate / 1e9:.1f} GFLOP/s: {duration(gpt2, gpt_rate)};  "
      f"one GPU: {duration(gpt2, gpu)}.")
print(f"ResNet-50 on ImageNet, 90 epochs = {resnet50:.1e} FLOPs:\n"
      f"    here at {cnn_rate / 1e9:.1f} GFLOP/s: {duration(resnet50, cnn_rate)};  "
      f"one GPU: {duration(resnet50, gpu)}.")

# %% [markdown]
# The gap is the reason GPUs and TPUs exist: the step is the same, the arithmetic is thousands
# of times faster.
#
# In TensorBoard, Scalars → `loss`: the `cpu` and `cpu_2` curves lie on top of each other.
# Scalars → `samples_per_second` of `flops_…`: the speeds the extrapolation used.

# %%
for name in ("cpu", "cpu_2", "flops_transformer", "flops_resnet"):
    print(f"Wrote: {os.path.join(logdir, name)}")
print(f"Look at: tensorboard --logdir {logdir}")
