"""The hooks of a run, all Keras callbacks: the loop drives them as `model.fit` drives its own.

A callback may also define `on_train_abort()`, called when training raised
(a bar line still ends, signal handlers go back, the profiler stops).
"""

from tfkit.callbacks.checkpointing import CheckpointSaver
from tfkit.callbacks.guard import NanGuard
from tfkit.callbacks.report import EpochReport, epoch_line

__all__ = ["CheckpointSaver", "EpochReport", "NanGuard", "epoch_line"]
