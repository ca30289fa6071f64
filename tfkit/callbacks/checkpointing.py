"""Checkpoints at the run's interval, at its end, and on SIGTERM/SIGINT before stopping."""

from __future__ import annotations

import keras

from tfkit.checkpoints import Checkpointer
from tfkit.interrupts import StopRequests, TrainingInterrupted
from tfkit.state import TrainState


class CheckpointSaver(keras.callbacks.Callback):
    """Saves model, optimizer and state through a `Checkpointer`.

    The starting weights first (a finite start to roll back to), then when the
    checkpointer says one is due, at the last epoch and at an early stop. A
    signal (a preemption's SIGTERM, a Ctrl-C) is caught while training runs:
    after the current call a checkpoint is saved and `TrainingInterrupted`
    raised, so a re-run resumes there. Without a checkpointer it only stops.

    Example:
        >>> saver = CheckpointSaver(None, TrainState(), steps_per_epoch=10, epochs=2)
    """

    def __init__(self, checkpointer: Checkpointer | None, state: TrainState, *,
                 steps_per_epoch: int, epochs: int) -> None:
        super().__init__()
        self.checkpointer, self.state = checkpointer, state
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.stop = StopRequests()

    def on_train_begin(self, logs=None):
        self.stop.__enter__()
        if self.checkpointer and self.state.step == 0:
            self.checkpointer.save_initial()

    def on_train_batch_end(self, batch, logs=None):
        signal, step, ckpt = self.stop.requested, self.state.step, self.checkpointer
        mid_epoch = step % self.steps_per_epoch != 0  # an epoch's end saves after its history
        if ckpt and (signal or (mid_epoch and ckpt.due(step))):
            ckpt.save(step, self.state.saved())
        if signal:
            saved = f"checkpoint saved at step {step}" if ckpt else "no checkpoint folder"
            raise TrainingInterrupted(f"stopped by signal {signal}: {saved}; re-run to resume",
                                      signal)

    def on_epoch_end(self, epoch, logs=None):
        ckpt = self.checkpointer
        if ckpt and (ckpt.due(self.state.step) or epoch == self.epochs - 1
                     or self.model.stop_training):
            ckpt.save(self.state.step, self.state.saved())

    def on_train_end(self, logs=None):
        self.stop.__exit__()

    def on_train_abort(self) -> None:
        self.stop.__exit__()
