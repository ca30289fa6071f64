"""`resnet`: a residual convolutional network with batch normalization, at small scale."""

from __future__ import annotations

from typing import Any

import keras

from tfkit.data import DataSpec
from tfkit.zoo.layers import head


def resnet(
    spec: DataSpec, width: int = 16, stages: int = 2, blocks: int = 2,
    synchronized: bool = True,
) -> keras.Model:
    """A ResNet (He et al. 2015) for images [H, W] or [H, W, C], sized by width and depth.

    A 3x3 stem convolution, then `stages` stages of `blocks` residual blocks
    (conv-BN-ReLU-conv-BN plus the block's input, then ReLU); each stage after
    the first halves the resolution (stride 2, with a 1x1 projection on the
    shortcut) and doubles the width. Global average pooling, then the head.
    ResNet-50 is the same idea at 4 stages of 3-6 bottleneck blocks, width 64.

    At the defaults on `digits` (8x8x1, 10 classes): 43,418 parameters
    (42,938 trainable; the rest are batch statistics), 2.25 MFLOPs per example
    forward (`tfkit.models.flops_per_example`; 2 FLOPs per multiply-add).

    Batch normalization is synchronized across replicas by default: each
    replica normalizes by the statistics of the whole global batch, so
    training under `strategy="cpu:2"` computes what one device computes (to
    float rounding). With `synchronized=False`, each replica uses its own
    half-batch's statistics: a different (noisier) model, and a loss that
    differs from single-device training by ~1e-2.

    Args:
        spec: the data spec (images).
        width: filters of the first stage.
        stages: resolution stages (depth).
        blocks: residual blocks per stage (depth).
        synchronized: batch statistics over the global batch across replicas.

    Example:
        >>> result = tfkit.train("digits", model="resnet", epochs=10)  # doctest: +SKIP
    """
    if spec.kind != "tensor" or len(spec.input_shape) not in (2, 3):
        raise ValueError(
            f"model 'resnet' needs images [H, W] or [H, W, C]; got input shape "
            f"{spec.input_shape} ({spec.kind} data)"
        )
    inputs = keras.Input(shape=spec.input_shape, name="x")
    x = inputs if len(spec.input_shape) == 3 else keras.layers.Reshape(
        (*spec.input_shape, 1))(inputs)
    x = _conv_bn(x, width, 3, 1, synchronized, "stem")
    x = keras.layers.ReLU()(x)
    for stage in range(stages):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual(x, width * 2**stage, stride, synchronized, f"s{stage}b{block}")
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, head(spec, x), name="resnet")


def _residual(x: Any, filters: int, stride: int, synchronized: bool, name: str) -> Any:
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, synchronized, f"{name}_project")
    y = _conv_bn(x, filters, 3, stride, synchronized, f"{name}_a")
    y = keras.layers.ReLU()(y)
    y = _conv_bn(y, filters, 3, 1, synchronized, f"{name}_b")
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, synchronized: bool, name: str):
    # No bias: the batch normalization's offset that follows does its job.
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    return keras.layers.BatchNormalization(synchronized=synchronized, name=f"{name}_bn")(x)
