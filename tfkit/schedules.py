"""Learning-rate schedules as Keras callbacks, set at the start of each epoch."""

from __future__ import annotations

import math

import keras


class CosineDecay(keras.callbacks.Callback):
    """Learning rate `base * (1 + cos(pi * epoch / epochs)) / 2`: from `base` down towards 0.

    The last epochs take small steps, so the final weights settle instead of
    being wherever the last noisy step left them: no need to pick a lucky epoch.

    Example:
        >>> result = tfkit.train("sunspots", model="lstm", lr_schedule="cosine")  # doctest: +SKIP
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer, base: float, epochs: int) -> None:
        super().__init__()
        self.optimizer, self.base, self.epochs = optimizer, base, epochs

    def rate(self, epoch: int) -> float:
        return self.base * (1 + math.cos(math.pi * epoch / self.epochs)) / 2

    def on_epoch_begin(self, epoch, logs=None):
        self.optimizer.learning_rate.assign(self.rate(epoch))
