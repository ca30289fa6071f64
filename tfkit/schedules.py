"""Learning-rate schedules as Keras callbacks, set at the start of each epoch."""

from __future__ import annotations

import math

import keras


class EpochCosineDecay(keras.callbacks.Callback):
    """Learning rate `base * (1 + cos(pi * epoch / epochs)) / 2`, held for the whole epoch.

    The last epochs take small steps, so the final weights settle instead of
    being wherever the last noisy step left them: no need to pick a lucky epoch.

    Not `keras.optimizers.schedules.CosineDecay`, which moves the rate at every
    step from the optimizer's iteration count: this one is a callback that sets
    the optimizer's learning-rate variable once an epoch, so the rate an epoch
    trained at is one number in its history, and a NaN rollback can lower
    `base` and go on from the restored epoch.

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
