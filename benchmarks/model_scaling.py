"""How parameters, FLOPs, memory and speed grow with width and depth, per zoo builder.

Run by hand (results in benchmarks/RESULTS.md, "Model zoo"):

    PYTHONPATH=. python benchmarks/model_scaling.py

For each builder at a few sizes: parameters, forward FLOPs per example
(`tfkit.models.flops_per_example`), `tfkit.estimate_memory` at the batch size,
and the training speed measured through `tfkit.train` on one device (the
second epoch's samples/s, so tracing is not counted). Achieved FLOP/s =
samples/s x 3 x forward FLOPs (a training step costs about three forward
passes). Then an extrapolation from the best achieved FLOP/s to GPT-2 small
and ResNet-50 training: an estimate from stated assumptions, not a measurement.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

import tfkit
from tfkit import datasets, models, sequences, text

BATCH = 32
# An assumed modern GPU: NVIDIA A100, 312 TFLOP/s dense bf16 peak, 40 % achieved
# (typical of well-tuned large-model training). Stated, not measured here.
GPU_PEAK, GPU_UTILIZATION = 312e12, 0.40
GPT2_PARAMETERS, GPT2_TOKENS = 124e6, 10e9  # GPT-2 small; 10B tokens of training
RESNET50_FORWARD, IMAGENET_IMAGES, RESNET50_EPOCHS = 4.1e9, 1.281e6, 90


def _data(builder: str):
    if builder == "resnet":
        return datasets.make_images(640, size=16, seed=0), None
    if builder == "transformer":
        return text.Corpus("docs", text.python_docstrings().documents[:400]), 64
    t = np.arange(1200, dtype=np.float64)
    return sequences.Series.from_values(np.sin(t / 7.0) + 0.1 * np.cos(t), "wave"), 24


SIZES = {
    "resnet": [{"width": 8}, {"width": 16}, {"width": 32}, {"width": 16, "blocks": 3}],
    "lstm": [{"units": 32}, {"units": 64}, {"units": 128}, {"units": 64, "layers": 2}],
    "gru": [{"units": 64}],
    "conv1d": [{"filters": 32}, {"filters": 64}],
    "transformer": [{"width": 32}, {"width": 64}, {"width": 128}, {"width": 64, "layers": 4}],
}


def measure(builder: str, sizes: dict) -> dict:
    data, window = _data(builder)
    result = tfkit.train(data, model=builder, window=window, model_kwargs=sizes, epochs=2,
                         batch_size=BATCH, strategy="cpu", logdir=None, export=None,
                         validation_split=0.0)
    model = result.model
    flops = models.flops_per_example(model, sequence_length=window)
    speed = result.stats["samples_per_second"][-1]
    memory = tfkit.estimate_memory(model, BATCH, "adam", sequence_length=window)
    return {"builder": builder, "sizes": sizes, "parameters": model.count_params(),
            "forward_flops": flops, "memory_mb": memory.total / 2**20,
            "samples_per_second": speed, "achieved_gflops": speed * 3 * flops / 1e9}


def _days(flops: float, rate: float) -> str:
    seconds = flops / rate
    return f"{seconds / 86400:,.1f} days" if seconds > 86400 else f"{seconds / 3600:,.1f} hours"


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    rows = [measure(b, s) for b, sizes in SIZES.items() if not argv or b in argv for s in sizes]
    print("| builder | sizes | parameters | fwd MFLOPs/example | memory MB (batch 32, Adam) "
          "| samples/s | achieved GFLOP/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['builder']} | {r['sizes']} | {r['parameters']:,} | "
              f"{r['forward_flops'] / 1e6:,.2f} | {r['memory_mb']:.1f} | "
              f"{r['samples_per_second']:,.0f} | {r['achieved_gflops']:.2f} |")
    cpu = max(r["achieved_gflops"] for r in rows) * 1e9
    gpu = GPU_PEAK * GPU_UTILIZATION
    gpt2 = 6 * GPT2_PARAMETERS * GPT2_TOKENS  # 6 FLOPs per parameter per token
    resnet50 = 3 * RESNET50_FORWARD * IMAGENET_IMAGES * RESNET50_EPOCHS
    print(f"\nBest achieved on this CPU: {cpu / 1e9:.1f} GFLOP/s. Assumed GPU: "
          f"{GPU_PEAK / 1e12:.0f} TFLOP/s peak x {GPU_UTILIZATION:.0%} = {gpu / 1e12:.0f} TFLOP/s.")
    print(f"GPT-2 small (124M parameters), {GPT2_TOKENS / 1e9:.0f}B tokens = {gpt2:.2e} FLOPs: "
          f"this CPU {_days(gpt2, cpu)}; one GPU {_days(gpt2, gpu)}.")
    print(f"ResNet-50 (4.1 GFLOPs forward), ImageNet 90 epochs = {resnet50:.2e} FLOPs: "
          f"this CPU {_days(resnet50, cpu)}; one GPU {_days(resnet50, gpu)}.")


if __name__ == "__main__":
    main(sys.argv[1:])
